"""An S3 store that keeps every key byte for byte, for tests of keys written by others.

SeaweedFS (the `s3_store` fixture's real server) rewrites 'a//b', '.'/'..' segments and
backslashes when an object is put, so keys like `logs/good//tmp/x.txt` cannot be written there;
AWS S3 keeps them verbatim, and so does moto's in-process S3, which these tests use instead.

    from verbatim_s3 import put_raw, verbatim_s3_store  # noqa: F401  (the fixture)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jadd_dagster.s3store import S3Store
from jadd_dagster.storage import LocalStore, ObjectStore


@pytest.fixture
def verbatim_s3_store(monkeypatch) -> Iterator[S3Store]:
    """An S3Store under the prefix 'jadd' of an empty bucket whose server keeps keys verbatim."""
    import boto3
    from moto import mock_aws

    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.session.Session().client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="verbatim")
        yield S3Store("verbatim", prefix="jadd", client=client)


def put_raw(store: ObjectStore, key: str, data: bytes = b"1") -> None:
    """Write an object under a key the store's own API would refuse (as another writer could)."""
    if isinstance(store, LocalStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif isinstance(store, S3Store):
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}", Body=data)
    else:
        raise TypeError(f"no raw writes for {store!r}")
