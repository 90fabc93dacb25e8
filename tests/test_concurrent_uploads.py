"""A scene's many files go to and from the store through a bounded pool of threads, with the
guarantees of one-by-one transfers: markers last, the first error raised, no thread left over.
Run against a real S3 server (tests/services/s3.py) through real S3Stores."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import threading
import time

import pytest

import jadd_dagster.s3store as s3store
from jadd_dagster.layout import sampled_root_key
from jadd_dagster.nuscenes.tables import sample_data_filename
from jadd_dagster.s3store import S3Store
from jadd_dagster.scene_outputs import frames_root, place_frames
from jadd_dagster.scene_record import EgoPose, FrameRecord, SceneRecord
from jadd_dagster.storage import TRANSFER_THREADS, LocalStore, TransferError

N_FILES = 64  # four rounds of TRANSFER_THREADS
CHANNELS = ("CAM_FRONT", "CAM_BACK")


class RecordingS3Store(S3Store):
    """A real S3Store that notes each upload as it completes, and the most uploads in flight at
    once; `before_upload(path, key)` runs first (a test can make a file vanish there)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.completed: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.before_upload = lambda path, key: None

    def upload_file(self, path, key):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.before_upload(path, key)
            super().upload_file(path, key)
            with self.lock:
                self.completed.append(key)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def store(s3_store) -> RecordingS3Store:
    return RecordingS3Store(s3_store.bucket, prefix=s3_store.prefix, client=s3_store.client)


def transfer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jadd-transfer")]


def write_files(folder, n=N_FILES, marker="scene.json"):
    names = [f"{CHANNELS[i % 2]}/{i:04d}.jpg" for i in range(n)]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode() * 50)
    (folder / marker).write_text("{}")
    return names


def test_the_marker_goes_up_after_every_other_file_is_complete(store):
    with store.staged_output("scenes/s1", last=["scene.json"]) as folder:
        names = write_files(folder)
    assert store.completed[-1] == "scenes/s1/scene.json"
    assert sorted(store.completed[:-1]) == sorted(f"scenes/s1/{name}" for name in names)
    assert store.most_in_flight > 1  # really concurrent
    assert store.most_in_flight <= TRANSFER_THREADS
    # The server's own clock agrees: no object is newer than the marker.
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix="jadd/scenes/s1/")["Contents"]
    modified = {item["Key"].rsplit("/", 1)[-1]: item["LastModified"] for item in listed}
    assert len(modified) == N_FILES + 1
    assert max(modified.values()) == modified["scene.json"]
    assert store.get_bytes("scenes/s1/CAM_BACK/0001.jpg") == b"CAM_BACK/0001.jpg" * 50
    assert transfer_threads() == []


def test_a_file_that_vanishes_fails_the_publication_names_its_key_and_leaves_no_marker(store):
    doomed = "scenes/s1/CAM_FRONT/0042.jpg"

    def vanish(path, key):
        if key == doomed:
            path.unlink()

    store.before_upload = vanish
    with pytest.raises(TransferError, match=doomed) as raised:
        with store.staged_output("scenes/s1", last=["scene.json"]) as folder:
            write_files(folder)
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert not store.exists("scenes/s1/scene.json")
    assert doomed not in store.completed
    assert transfer_threads() == []  # every running upload finished before the error came out


def test_a_key_the_store_refuses_fails_the_publication_and_leaves_no_marker(store):
    with pytest.raises(ValueError, match=r"inside the store.*a\\\\b\.jpg"):
        with store.staged_output("scenes/s1", last=["scene.json"]) as folder:
            write_files(folder)
            (folder / "a\\b.jpg").write_bytes(b"x")  # a legal file name, but no key
    assert not store.exists("scenes/s1/scene.json")
    assert transfer_threads() == []


def test_after_a_failure_no_further_upload_starts(store):
    started = []

    def fail_first(path, key):
        started.append(key)
        if len(started) == 1:
            raise OSError("refused")

    store.before_upload = fail_first
    with pytest.raises(TransferError, match="could not upload .*scenes/s1/.*OSError: refused"):
        store.upload_files([(path, f"scenes/s1/{i}") for i, path in enumerate([__file__] * 400)])
    assert len(started) < 400  # the queued ones were cancelled
    assert transfer_threads() == []


def scene_record(staging) -> SceneRecord:
    """A record of N_FILES frames, every fifth a key frame, written into staging."""
    pose = EgoPose((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))
    frames = []
    for i in range(N_FILES):
        channel = CHANNELS[i % 2]
        path = f"{channel}/{1_000_000 + i * 50_000}.jpg"
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(f"frame {i}".encode() * 100)
        frames.append(FrameRecord(channel=channel, timestamp_us=1_000_000 + i * 50_000, is_key_frame=i % 5 == 0,
                                  keyframe_index=i // 5 if i % 5 == 0 else None, path=path, width=8, height=8,
                                  ego_pose=pose))
    return SceneRecord(scene_id="log-a__0000", log_id="log-a", scene_index=0, location="town", vehicle="car",
                       date_captured="2023-11-14", log_start_time_us=0, start_time_us=1_000_000,
                       end_time_us=1_000_000 + N_FILES * 50_000, profile="p1", keyframe_hz=2.0, sweep_hz=10.0,
                       cameras={}, keyframe_times_us=[], frames=frames)


def test_placed_frames_match_a_local_store_and_are_in_the_store(store, tmp_path):
    # The local store's rename path is the one-by-one reference: same record, same bytes.
    local_staging, s3_staging = tmp_path / "local", tmp_path / "s3"
    local_staging.mkdir(), s3_staging.mkdir()
    local_store = LocalStore(tmp_path / "store")
    expected = place_frames(local_store, local_staging, scene_record(local_staging))
    original = scene_record(s3_staging)
    placed = place_frames(store, s3_staging, original)

    assert placed == expected
    assert [f.path for f in placed.frames] == [
        sample_data_filename("log-a", f.channel, f.timestamp_us, f.is_key_frame) for f in original.frames
    ]
    assert placed.frames == [dataclasses.replace(f, path=p.path) for f, p in zip(original.frames, placed.frames)]
    root = sampled_root_key("p1")
    assert sorted(store.completed) == sorted(f"{root}/{f.path}" for f in placed.frames)
    for i in (0, 1, N_FILES - 1):
        assert store.get_bytes(f"{root}/{placed.frames[i].path}") == f"frame {i}".encode() * 100
    assert [p for p in s3_staging.rglob("*") if p.is_file()] == []  # moved, as on a local store
    assert store.most_in_flight > 1


def test_frames_root_downloads_the_included_frames_whole(store, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    placed = place_frames(store, staging, scene_record(staging))
    with frames_root(store, "p1", [placed], tmp_path, include=lambda f: f.is_key_frame) as root:
        got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert got == sorted(f.path for f in placed.frames if f.is_key_frame)
        assert (root / placed.frames[5].path).read_bytes() == b"frame 5" * 100
    assert transfer_threads() == []


def test_a_missing_frame_fails_frames_root_naming_its_key(store, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    placed = place_frames(store, staging, scene_record(staging))
    gone = f"{sampled_root_key('p1')}/{placed.frames[10].path}"
    store.delete_keys([gone])
    with pytest.raises(FileNotFoundError, match=gone):
        with frames_root(store, "p1", [placed], tmp_path):
            pass
    assert transfer_threads() == []


def test_local_folder_downloads_every_file_concurrently_and_whole(store, tmp_path):
    with store.staged_output("scenes/s1", last=["scene.json"]) as folder:
        names = write_files(folder)
    with store.local_folder("scenes/s1", scratch=tmp_path) as local:
        got = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        assert got == sorted([*names, "scene.json"])
        assert (local / names[7]).read_bytes() == names[7].encode() * 50


def test_threads_that_ask_together_get_one_client(monkeypatch):
    made = []
    real = s3store.make_client

    def slow_make_client(*args, **kwargs):
        made.append(1)
        time.sleep(0.05)  # wide enough for every thread to race past an unguarded check
        return real(*args, **kwargs)

    monkeypatch.setattr(s3store, "make_client", slow_make_client)
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:1", region="us-east-1")
    start = threading.Barrier(8)
    clients = []

    def ask():
        start.wait()
        clients.append(store.client)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1
    assert len({id(client) for client in clients}) == 1


def test_a_pickled_store_makes_its_own_client_and_lock():
    store = S3Store("bucket", prefix="p", endpoint_url="http://127.0.0.1:1", region="us-east-1")
    store.client  # noqa: B018  (made here, not sent)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._client is None and copy.url == store.url
    assert copy.client is not store.client


def test_a_small_download_whose_body_breaks_off_is_fetched_again_whole(store, tmp_path):
    from botocore.response import StreamingBody

    payload = os.urandom(300_000)
    store.put_bytes("scenes/s1/f.jpg", payload)
    broken = []

    def break_first_body(parsed, **kwargs):
        if not broken and "Body" in parsed:  # the body ends early: botocore sees a short read
            broken.append(True)
            parsed["Body"] = StreamingBody(io.BytesIO(payload[:1000]), parsed["ContentLength"])

    store.client.meta.events.register("after-call.s3.GetObject", break_first_body)
    try:
        store.download_file("scenes/s1/f.jpg", tmp_path / "f.jpg")
    finally:
        store.client.meta.events.unregister("after-call.s3.GetObject", break_first_body)
    assert broken
    assert (tmp_path / "f.jpg").read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["f.jpg"]  # no partial file left


def test_scenes_published_side_by_side_share_the_stores_request_limit(store, tmp_path):
    # A worker samples scenes side by side, each publishing with a pool of its own.
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def sent(**kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])

    def answered(**kwargs):
        with lock:
            in_flight[0] -= 1

    store.client.meta.events.register("before-call.s3.PutObject", sent)
    store.client.meta.events.register("after-call.s3.PutObject", answered)
    store.client.meta.events.register("after-call-error.s3.PutObject", answered)
    folders = []
    for scene in range(3):
        folder = tmp_path / f"scene{scene}"
        folder.mkdir()
        write_files(folder)
        folders.append(folder)
    errors = []

    def publish(scene):
        try:
            store.publish_folder(folders[scene], f"scenes/s{scene}", last=["scene.json"])
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(scene,)) for scene in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert 1 < most[0] <= TRANSFER_THREADS
    assert all(store.exists(f"scenes/s{scene}/scene.json") for scene in range(3))
