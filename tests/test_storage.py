"""The object store contract, run against a local folder and against a real S3 server."""

from __future__ import annotations

import os

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

from jadd_dagster.s3store import S3Store
from jadd_dagster.storage import LocalStore, key_problem, open_store
from verbatim_s3 import put_raw, verbatim_s3_store  # noqa: F401  (a fixture)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def record_requests(store: S3Store) -> list[str]:
    """The S3 operations the store's client sends from now on, in order, as 'Operation key'."""
    sent = []

    def record(request, event_name, **kwargs):
        operation = event_name.rsplit(".", 1)[-1]
        key = request.url.split("?")[0].split(f"/{store.bucket}/", 1)[-1]
        sent.append(f"{operation} {key}")

    store.client.meta.events.register("before-send.s3", record)
    return sent


# Reading and writing objects.


def test_put_bytes_round_trips(store):
    store.put_bytes("logs/a/manifest.json", b'{"x": 1}')
    assert store.get_bytes("logs/a/manifest.json") == b'{"x": 1}'
    assert store.exists("logs/a/manifest.json")
    assert store.exists("logs/a")
    assert not store.exists("logs/b")


def test_put_bytes_replaces_an_object(store):
    store.put_bytes("k", b"old")
    store.put_bytes("k", b"new")
    assert store.get_bytes("k") == b"new"


def test_json_round_trips(store):
    store.write_json("runs/r1.json", {"scenes": [1, 2], "name": "é"})
    assert store.read_json("runs/r1.json") == {"scenes": [1, 2], "name": "é"}


def test_a_missing_key_raises_file_not_found_naming_it(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="scenes/nope.json"):
        store.get_bytes("scenes/nope.json")
    with pytest.raises(FileNotFoundError, match="scenes/nope.json"):
        store.download_file("scenes/nope.json", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="scenes/nope.json"):
        store.copy("scenes/nope.json", "scenes/other.json")


def test_files_upload_and_download(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    store.upload_file(source, "logs/l1/frames.bin")
    store.download_file("logs/l1/frames.bin", tmp_path / "deep" / "out.bin")
    assert (tmp_path / "deep" / "out.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../x", "a\\b", ""])
def test_keys_outside_the_store_are_refused(store, key):
    with pytest.raises(ValueError, match="inside the store"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="inside the store"):
        store.get_bytes(key)
    with pytest.raises(ValueError, match="inside the store"):
        store.list_children(key)
    with pytest.raises(ValueError, match="inside the store"):
        store.delete_prefix(key)


# Listing.


def test_list_children_gives_files_and_folders_sorted_without_dotted_names(store):
    for key in ["scenes/b/x.json", "scenes/a.json", "scenes/c/d/e.json", "scenes/.staging/x", "scenes/.tmp.json"]:
        store.put_bytes(key, b"1")
    store.put_bytes("scenes-other/z.json", b"1")  # shares the string prefix, not the folder
    assert store.list_children("scenes") == ["a.json", "b", "c"]
    assert store.list_children("scenes/c") == ["d"]


def test_list_children_of_a_missing_prefix_is_empty(store):
    assert store.list_children("nothing/here") == []


def test_list_keys_is_recursive_and_relative_to_the_store(store):
    for key in ["d/a.json", "d/sub/b.json", "d/sub/deeper/c.json", "d/.hidden/x", "d/sub/.y", "e/f"]:
        store.put_bytes(key, b"1")
    assert sorted(store.list_keys("d")) == ["d/a.json", "d/sub/b.json", "d/sub/deeper/c.json"]
    assert list(store.list_keys("d/a.json")) == ["d/a.json"]
    assert list(store.list_keys("missing")) == []


def test_list_children_pages_through_many_objects(s3_store):
    names = [f"k{i:04d}" for i in range(1105)]  # more than one ListObjectsV2 page (1000)
    for name in names:
        s3_store.put_bytes(f"many/{name}", b"")
    assert s3_store.list_children("many") == names
    assert len(list(s3_store.list_keys("many"))) == len(names)
    s3_store.delete_prefix("many")  # more than one DeleteObjects batch (1000)
    assert s3_store.list_children("many") == []


# Copying and deleting.


def test_copy_duplicates_an_object(store):
    store.put_bytes("a/src.bin", b"payload")
    store.copy("a/src.bin", "b/dst.bin")
    assert store.get_bytes("b/dst.bin") == b"payload"
    assert store.get_bytes("a/src.bin") == b"payload"


def test_copy_on_s3_happens_on_the_server(s3_store):
    s3_store.put_bytes("a/src.bin", b"payload")
    sent = record_requests(s3_store)
    s3_store.copy("a/src.bin", "b/dst.bin")
    assert [line.split()[0] for line in sent] == ["HeadObject", "CopyObject"]


def test_delete_prefix_removes_everything_under_it_only(store):
    for key in ["d/a", "d/sub/b", "d/.staging/c", "d2/keep", "keep"]:
        store.put_bytes(key, b"1")
    store.delete_prefix("d")
    assert not store.exists("d")
    assert list(store.list_keys("d")) == []
    assert store.get_bytes("d2/keep") == b"1"
    assert store.get_bytes("keep") == b"1"
    store.delete_prefix("keep")
    assert not store.exists("keep")
    store.delete_prefix("never/was")


def test_delete_keys_removes_just_those_objects(store):
    for key in ["d/a", "d/b", "d/sub/c", "keep"]:
        store.put_bytes(key, b"1")
    store.delete_keys(["d/a", "d/sub/c", "never/was"])
    assert sorted(store.list_keys("d")) == ["d/b"] and store.get_bytes("keep") == b"1"


# Staged outputs and local folders.


def test_staged_output_publishes_every_file(store):
    with store.staged_output("datasets/d1", last=["_COMPLETE"]) as folder:
        (folder / "v1.0" / "samples").mkdir(parents=True)
        (folder / "v1.0" / "scene.json").write_text("[]")
        (folder / "v1.0" / "samples" / "f.jpg").write_bytes(b"jpg")
        (folder / "_COMPLETE").write_text("ok")
    assert sorted(store.list_keys("datasets/d1")) == [
        "datasets/d1/_COMPLETE",
        "datasets/d1/v1.0/samples/f.jpg",
        "datasets/d1/v1.0/scene.json",
    ]
    assert store.get_bytes("datasets/d1/v1.0/samples/f.jpg") == b"jpg"
    assert store.list_children("datasets") == ["d1"]


def test_staged_output_replaces_the_previous_content(store):
    with store.staged_output("scenes/s1") as folder:
        (folder / "old.json").write_text("old")
        (folder / "kept.json").write_text("v1")
    with store.staged_output("scenes/s1") as folder:
        (folder / "kept.json").write_text("v2")
    assert list(store.list_keys("scenes/s1")) == ["scenes/s1/kept.json"]
    assert store.get_bytes("scenes/s1/kept.json") == b"v2"


def test_staged_output_publishes_nothing_if_the_block_raises(store):
    store.put_bytes("scenes/s1/result.json", b"previous")
    with pytest.raises(RuntimeError, match="boom"):
        with store.staged_output("scenes/s1", last=["_COMPLETE"]) as folder:
            (folder / "result.json").write_text("half-written")
            (folder / "_COMPLETE").write_text("ok")
            raise RuntimeError("boom")
    assert list(store.list_keys("scenes/s1")) == ["scenes/s1/result.json"]
    assert store.get_bytes("scenes/s1/result.json") == b"previous"
    assert list(store.list_keys("scenes/s2")) == []


def test_staged_output_on_s3_uploads_the_last_files_after_the_others(s3_store):
    sent = record_requests(s3_store)
    with s3_store.staged_output("scenes/s1", last=["_COMPLETE", "a/_DONE"]) as folder:
        for name in ["_COMPLETE", "z.json", "a/_DONE", "a/b.json", "m.bin"]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(name)
    puts = [line.split()[1] for line in sent if line.startswith("PutObject ")]
    assert sorted(puts[:3]) == ["jadd/scenes/s1/a/b.json", "jadd/scenes/s1/m.bin", "jadd/scenes/s1/z.json"]
    assert sorted(puts[3:]) == ["jadd/scenes/s1/_COMPLETE", "jadd/scenes/s1/a/_DONE"]


def test_local_folder_holds_every_file_under_the_prefix(store, tmp_path):
    store.put_bytes("logs/l1/manifest.json", b"{}")
    store.put_bytes("logs/l1/cam/000.jpg", b"jpg")
    store.put_bytes("logs/l2/other.json", b"{}")
    with store.local_folder("logs/l1", scratch=tmp_path) as folder:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert files == ["cam/000.jpg", "manifest.json"]
        assert (folder / "cam" / "000.jpg").read_bytes() == b"jpg"


# S3 specifics: large files, retries, conditional writes, URLs.


def test_large_files_go_up_in_parts_and_come_back_whole(s3_store, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(10 * 1024 * 1024 + 123))  # above the 8 MiB multipart threshold
    sent = record_requests(s3_store)
    s3_store.upload_file(source, "logs/l1/big.bin")
    operations = [line.split()[0] for line in sent]
    assert operations[0] == "CreateMultipartUpload"
    assert operations.count("UploadPart") == 2
    assert operations[-1] == "CompleteMultipartUpload"
    s3_store.download_file("logs/l1/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


class EmptyBody:
    def __init__(self, body: bytes = b""):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def test_transient_failures_are_retried(s3_store):
    """Throttling, a server error and a dropped connection, then the PUT goes through."""
    failures = [
        (503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
        (500, b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"),
        ConnectionClosedError(endpoint_url=s3_store.client.meta.endpoint_url),
    ]
    attempts = []

    def fail_first_attempts(request, **kwargs):
        attempts.append(request.url)
        if len(attempts) <= len(failures):
            failure = failures[len(attempts) - 1]
            if isinstance(failure, Exception):
                raise failure
            status, body = failure
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, EmptyBody(body))
        return None

    s3_store.client.meta.events.register("before-send.s3.PutObject", fail_first_attempts)
    s3_store.put_bytes("runs/r1.json", b"{}")
    assert len(attempts) == 4
    assert s3_store.get_bytes("runs/r1.json") == b"{}"


def test_conditional_put_refuses_to_overwrite(s3_store):
    s3_store.put_bytes("locks/chunk-1", b"worker-a", if_absent=True)
    with pytest.raises(FileExistsError, match="locks/chunk-1"):
        s3_store.put_bytes("locks/chunk-1", b"worker-b", if_absent=True)
    assert s3_store.get_bytes("locks/chunk-1") == b"worker-a"


def test_keys_live_under_the_store_prefix(s3_store, s3_server):
    s3_store.put_bytes("a/b.json", b"1")
    listed = s3_server.client().list_objects_v2(Bucket=s3_store.bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["jadd/a/b.json"]
    assert s3_store.describe("a/b.json") == f"s3://{s3_store.bucket}/jadd/a/b.json"


@pytest.mark.parametrize("endpoint_variable", ["JADD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_open_store_gives_an_s3_store_from_the_url(s3_server, monkeypatch, endpoint_variable):
    bucket = s3_server.new_bucket()
    for name in ["JADD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(endpoint_variable, s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)

    store = open_store(f"s3://{bucket}/some/prefix")

    assert isinstance(store, S3Store)
    assert store.url == f"s3://{bucket}/some/prefix"
    store.put_bytes("x.json", b"1")
    assert store.get_bytes("x.json") == b"1"
    assert s3_server.client().get_object(Bucket=bucket, Key="some/prefix/x.json")["Body"].read() == b"1"


def test_building_a_store_does_no_io():
    store = S3Store.from_url("s3://bucket-only")
    assert store.url == "s3://bucket-only"
    assert store.bucket == "bucket-only" and store.prefix == ""
    assert store._client is None


# Keys written by others: listings skip and report what is no usable key (issue 9, items 1, 11, 17).


@pytest.mark.parametrize("key", ["a//b", "a//", "a/./b", "a\x00b", "a\bb", "a\\b", "./a", "a/.."])
def test_keys_with_empty_dot_or_odd_segments_are_refused(key):
    with pytest.raises(ValueError, match="inside the store"):
        LocalStore("/tmp/unused").path(key)
    assert key_problem(key) is not None


def test_a_listed_key_with_an_empty_segment_never_leaves_the_local_folder(verbatim_s3_store, tmp_path, caplog):
    store = verbatim_s3_store
    outside = tmp_path / "outside" / "x.txt"
    store.put_bytes("logs/good/manifest.json", b"{}")
    put_raw(store, f"logs/good/{outside}")  # 'logs/good//tmp/.../outside/x.txt'
    put_raw(store, "logs/good/../../escape.txt")
    put_raw(store, "logs/good/a\\b.txt")
    with store.local_folder("logs/good", scratch=tmp_path) as folder:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["manifest.json"]
    assert not outside.exists() and not (tmp_path / "escape.txt").exists()
    assert sorted(store.list_keys("logs/good")) == ["logs/good/manifest.json"]
    reported = caplog.text
    assert f"logs/good/{outside}" in reported and "empty segment" in reported
    assert "logs/good/../../escape.txt" in reported and "logs/good/a\\\\b.txt" in reported


def test_local_folder_refuses_a_key_from_any_store_that_would_leave_it(tmp_path, caplog):
    class Listing(LocalStore):
        """A store whose listing returns keys no store should (the last line of defence)."""

        def local_path(self, key):
            return None

        def list_keys(self, prefix):
            yield from ["p/ok.txt", "p//abs.txt", "p/../up.txt"]

    store = Listing(tmp_path / "store")
    store.put_bytes("p/ok.txt", b"1")
    with store.local_folder("p", scratch=tmp_path) as folder:
        assert sorted(p.name for p in folder.rglob("*")) == ["ok.txt"]
    assert "p//abs.txt" in caplog.text and "p/../up.txt" in caplog.text


def test_list_children_skips_and_reports_odd_names_so_the_others_still_list(store, caplog):
    store.put_bytes("logs/good/manifest.json", b"{}")
    for odd in ["m\\bad", "m\bad", "tab\there"]:
        if isinstance(store, S3Store) and "\\" in odd:
            continue  # SeaweedFS turns the backslash into '/'; verbatim_s3_store covers it
        put_raw(store, f"logs/{odd}/manifest.json")
    names = store.list_children("logs")
    assert names == ["good"]
    assert [n for n in names if store.exists(f"logs/{n}/manifest.json")] == ["good"]
    assert "m\\x08ad" in caplog.text


def test_list_children_on_s3_skips_backslashes_and_empty_names(verbatim_s3_store, caplog):
    store = verbatim_s3_store
    store.put_bytes("logs/good/manifest.json", b"{}")
    put_raw(store, "logs/m\\bad/manifest.json")
    put_raw(store, "logs//x/manifest.json")
    assert store.list_children("logs") == ["good"]
    assert "m\\\\bad" in caplog.text and "empty segment" in caplog.text


def test_folder_markers_are_skipped_quietly(store, tmp_path, caplog):
    store.put_bytes("logs/x/manifest.json", b"{}")
    if isinstance(store, S3Store):
        put_raw(store, "logs/x/cameras/", b"")  # what 'Create folder' in a console writes
        put_raw(store, "logs/x/", b"")
    store.put_bytes("logs/x/cameras/CAM_FRONT.mp4", b"mp4")
    assert sorted(store.list_keys("logs/x")) == ["logs/x/cameras/CAM_FRONT.mp4", "logs/x/manifest.json"]
    assert store.list_children("logs/x") == ["cameras", "manifest.json"]
    with store.local_folder("logs/x", scratch=tmp_path) as folder:
        assert (folder / "cameras" / "CAM_FRONT.mp4").read_bytes() == b"mp4"
    assert "WARNING" not in caplog.text


def test_written_objects_and_published_folders_get_the_umask_modes(tmp_path):
    import pandas as pd

    from jadd_dagster.storage import write_parquet

    previous = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "store")
        store.put_bytes("a/object.json", b"{}")
        write_parquet(store, "a/table.parquet", pd.DataFrame({"x": [1]}))
        source = tmp_path / "in.bin"
        source.write_bytes(b"1")
        source.chmod(0o600)
        store.upload_file(source, "a/uploaded.bin")
        with store.staged_output("scenes/s1") as folder:
            (folder / "sub").mkdir()
            (folder / "sub" / "frame.jpg").write_bytes(b"jpg")
    finally:
        os.umask(previous)
    modes = {p.relative_to(store.root).as_posix(): p.stat().st_mode & 0o777 for p in store.root.rglob("*")}
    assert modes == {
        "a": 0o755, "a/object.json": 0o644, "a/table.parquet": 0o644, "a/uploaded.bin": 0o644,
        "scenes": 0o755, "scenes/s1": 0o755, "scenes/s1/sub": 0o755, "scenes/s1/sub/frame.jpg": 0o644,
    }


def test_keys_starting_with_a_name_prefix_lists_one_logs_frames(store):
    for key in ["f/samples/CAM/log-1__CAM__1.jpg", "f/samples/CAM/log-1__CAM__2.jpg", "f/samples/CAM/log-10__CAM__1.jpg",
                "f/samples/CAM/log-2__CAM__1.jpg", "f/samples/CAM/log-1__CAM__x/deeper.jpg"]:
        store.put_bytes(key, b"1")
    assert sorted(store.keys_starting_with("f/samples/CAM/log-1__CAM__")) == [
        "f/samples/CAM/log-1__CAM__1.jpg", "f/samples/CAM/log-1__CAM__2.jpg"]  # not what lies deeper
    assert list(store.keys_starting_with("f/samples/CAM/log-3__CAM__")) == []
