"""The object store on S3 (or any S3-compatible server): `s3://bucket/prefix`.

Every key lives under the store's prefix. An S3 PUT is atomic per object (a multipart upload too:
the object appears when the upload completes), so writes need no temporary names; `staged_output`
and `publish_folder` from the base class upload the completion markers after everything else.

Credentials come only from boto3's usual chain (environment, config files, instance role). The
endpoint is AWS unless `JADD_S3_ENDPOINT_URL` (or boto3's own `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`) names another server. Transient failures (throttling, 5xx, dropped
connections, timeouts) are retried with exponential backoff by botocore's "standard" retry mode.

The many files of one output or input go through the base class's thread pool (`upload_files`,
`download_files`) on one shared client: boto3 clients are thread-safe, the store makes its client
once (under a lock) and gives it a connection pool as large as the thread pool. File transfers
take one of TRANSFER_THREADS slots of the store, so scenes that a worker samples side by side,
each with a pool of its own, still keep at most TRANSFER_THREADS requests (and connections) open.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from jadd_dagster.storage import TRANSFER_THREADS, ObjectStore, check_key, logger, usable_listed_key

ENDPOINT_ENV = "JADD_S3_ENDPOINT_URL"
MAX_ATTEMPTS = 8  # first try + 7 retries; botocore backs off exponentially with jitter, ≤ 20 s apart
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
MULTIPART_THRESHOLD = 8 * 1024 * 1024  # bytes; larger files go up in parts of this size
DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts
MISSING = {"NoSuchKey", "404", "NotFound"}
CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def client_config(**overrides):
    """botocore client settings: standard retries with backoff, bounded timeouts, a connection for
    each transfer thread (botocore keeps 10; more threads would open and drop connections)."""
    from botocore.config import Config

    settings = {
        "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        "max_pool_connections": TRANSFER_THREADS,
    }
    return Config(**{**settings, **overrides})


def make_client(endpoint_url: str | None = None, region: str | None = None, **kwargs):
    """A boto3 S3 client with the store's retry and timeout settings. `kwargs` go to
    the client (tests pass explicit credentials for their local server; production leaves
    credentials to boto3's chain)."""
    import boto3

    # A session of its own: boto3's default session caches the credentials it first resolved and
    # is not safe to share between threads.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=client_config(), **kwargs)


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)


def error_code(error) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    """A bucket, or a prefix in one, as the object store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client=None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ):
        if not bucket or "/" in bucket:
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self._client = client
        self._client_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(TRANSFER_THREADS)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """`s3://bucket/some/prefix`; the endpoint from JADD_S3_ENDPOINT_URL if set."""
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket, prefix, endpoint_url=os.environ.get(ENDPOINT_ENV) or None)

    @property
    def client(self):
        """The boto3 client, made on first use (so building a store does no I/O), once: threads
        that ask together get the same client."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.endpoint_url, self.region)
        return self._client

    def __getstate__(self):
        # boto3 clients and locks do not pickle; a store sent to another process makes its own.
        return {key: value for key, value in self.__dict__.items() if key not in ("_client", "_client_lock", "_slots")}

    def __setstate__(self, state):
        self.__dict__.update(state, _client=None, _client_lock=threading.Lock(),
                             _slots=threading.BoundedSemaphore(TRANSFER_THREADS))

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # Keys: store-relative <-> bucket keys.

    def object_key(self, key: str) -> str:
        """The bucket key of a store key."""
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def store_key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    def list_objects(self, object_prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        """Every page of ListObjectsV2 under a bucket-key prefix."""
        arguments = {"Bucket": self.bucket, "Prefix": object_prefix}
        if delimiter:
            arguments["Delimiter"] = delimiter
        yield from self.client.get_paginator("list_objects_v2").paginate(**arguments)

    def object_keys(self, object_prefix: str) -> Iterator[str]:
        for page in self.list_objects(object_prefix):
            for item in page.get("Contents", ()):
                yield item["Key"]

    def missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"no object {key!r} in {self.url}")

    # Primitives.

    def exists(self, key: str) -> bool:
        """True for an object or a 'folder' holding objects."""
        from botocore.exceptions import ClientError

        name = self.object_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
            return True
        except ClientError as error:
            if error_code(error) not in MISSING:
                raise
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{name}/", MaxKeys=1)
        return bool(found.get("Contents"))

    def list_children(self, prefix: str) -> list[str]:
        """Names directly under prefix; names that are no usable key (backslash, control
        characters, '..') are skipped and reported, so one odd folder hides nothing else."""
        folder = f"{self.object_key(prefix)}/"
        where = f"s3://{self.bucket}/{folder}"
        names = set()
        for page in self.list_objects(folder, delimiter="/"):
            for item in page.get("CommonPrefixes", ()):
                name = item["Prefix"][len(folder) : -1]
                if not name:  # keys 'prefix//...': no usable name
                    logger.warning("skipped objects under %s/: not a usable key (empty segment)", where)
                names.add(name)
            # An empty name is the prefix's own folder marker.
            names.update(item["Key"][len(folder) :] for item in page.get("Contents", ()))
        return sorted(n for n in names if n and not n.startswith(".") and usable_listed_key(n, where))

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every usable key under prefix; the others (empty, '.' or '..' segments, backslash,
        control characters, folder markers) are skipped and reported."""
        name = self.object_key(prefix)
        listed_any = False
        for object_key in self.object_keys(f"{name}/"):
            listed_any = True
            key = self.store_key(object_key)
            if usable_listed_key(key, self.url) and not any(part.startswith(".") for part in key.split("/")):
                yield key
        if not listed_any and self.exists(prefix):  # the prefix is itself an object
            yield check_key(prefix)

    def keys_starting_with(self, prefix: str) -> Iterator[str]:
        """One prefix listing (ListObjectsV2 takes any prefix, not only a folder's)."""
        for object_key in self.object_keys(self.object_key(prefix)):
            key = self.store_key(object_key)
            folder = prefix.rpartition("/")[0]
            if usable_listed_key(key, self.url) and key.startswith(prefix) and "/" not in key[len(folder) + 1:]:
                yield key

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()
        except ClientError as error:
            if error_code(error) in MISSING:
                raise self.missing(key) from None
            raise

    def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> None:
        """Write an object atomically. With `if_absent`, only if there is none yet (a conditional
        write, `If-None-Match: *`): FileExistsError otherwise, so two writers cannot both win."""
        from botocore.exceptions import ClientError

        name = self.object_key(key)
        if if_absent:
            try:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=data, IfNoneMatch="*")
            except ClientError as error:
                if error_code(error) in CONDITION_FAILED:
                    raise FileExistsError(f"object {key!r} already exists in {self.url}") from None
                raise
        elif len(data) < MULTIPART_THRESHOLD:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, name, Config=transfer_config())

    def download_file(self, key: str, path: Path) -> None:
        """One GET for an object below MULTIPART_THRESHOLD, written to a temporary name beside
        the target and renamed when complete; a larger object, or a small one whose body broke
        off mid-read, by managed transfer (parallel ranged GETs, body reads retried). The managed
        transfer alone sends a HEAD first and starts a thread pool: 12 client CPU ms a 200 KB
        frame where one GET takes ~5 (bench/bench_store_uploads.py, session 7)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        name = self.object_key(key)
        with self._slots:
            self._download(key, name, path)

    def _download(self, key: str, name: str, path: Path) -> None:
        from botocore.exceptions import ClientError
        from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=name)
            with contextlib.closing(response["Body"]) as body:
                if response["ContentLength"] < MULTIPART_THRESHOLD:
                    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.download")
                    try:
                        with open(partial, "wb") as out:
                            for chunk in body.iter_chunks(1024 * 1024):
                                out.write(chunk)
                        os.replace(partial, path)
                        return
                    except S3_RETRYABLE_DOWNLOAD_ERRORS:
                        pass  # the managed transfer below retries such reads
                    finally:
                        partial.unlink(missing_ok=True)
            # boto3 writes to a temporary name beside the target and renames it when complete.
            self.client.download_file(self.bucket, name, str(path), Config=transfer_config())
        except ClientError as error:
            if error_code(error) in MISSING:
                raise self.missing(key) from None
            raise

    def upload_file(self, path: Path, key: str) -> None:
        """One PUT, or above MULTIPART_THRESHOLD a multipart upload (managed transfer) that makes
        the object visible only when every part is in. A small file goes up with put_object: the
        managed transfer would start a thread pool for its one request, ~3 of the ~8 client CPU
        ms a 200 KB frame cost (bench/bench_store_uploads.py, session 7)."""
        name = self.object_key(key)
        with self._slots, open(path, "rb") as body:
            if os.fstat(body.fileno()).st_size < MULTIPART_THRESHOLD:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=body)
                return
        with self._slots:
            self.client.upload_file(str(path), self.bucket, name, Config=transfer_config())

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy (in parts for large objects); the data never comes here."""
        from botocore.exceptions import ClientError

        source = {"Bucket": self.bucket, "Key": self.object_key(src_key)}
        try:
            self.client.copy(source, self.bucket, self.object_key(dst_key), Config=transfer_config())
        except ClientError as error:
            if error_code(error) in MISSING:
                raise self.missing(src_key) from None
            raise

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object named prefix and every object under it (in-progress ones too)."""
        name = self.object_key(prefix)
        # List everything first: deleting while paginating could skip keys on some servers.
        # Deleting a key that does not exist is not an error on S3.
        doomed = [name, *self.object_keys(f"{name}/")]
        for start in range(0, len(doomed), DELETE_BATCH):
            self.delete_objects(doomed[start : start + DELETE_BATCH])

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete these objects, DELETE_BATCH a request; missing ones are no error on S3."""
        names = [self.object_key(key) for key in keys]
        for start in range(0, len(names), DELETE_BATCH):
            self.delete_objects(names[start : start + DELETE_BATCH])

    def delete_objects(self, object_keys: list[str]) -> None:
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in object_keys], "Quiet": True}
        )
        errors = response.get("Errors", ())
        if errors:
            first = errors[0]
            raise OSError(
                f"could not delete {len(errors)} object(s) in {self.url}, e.g. "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message', '')}".rstrip()
            )
