"""The worker image's recipe (Dockerfile), read as text: no Docker engine is needed (issue 9, item 17)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def lock_pins(name: str) -> dict[str, tuple[str, list[str]]]:
    """{package: (version, [sha256, ...])} of a lock file with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9_.\[\],-]+)==(\S+)(.*)", line)
        if match:
            package = re.sub(r"\[.*\]", "", match[1]).lower()
            pins[package] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", match[3]))
    return pins


def test_the_base_image_is_pinned_by_digest():
    [base] = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base


def test_every_package_is_installed_from_a_lock_with_hashes():
    installs = re.findall(r"pip install ([^&;\n]*)", DOCKERFILE)
    from_locks = [i for i in installs if " -r " in f" {i}"]
    assert len(from_locks) == 3 and all("--require-hashes" in i and "--no-deps" in i for i in from_locks)
    [project] = [i for i in installs if i not in from_locks]
    assert "--no-deps" in project and "--no-build-isolation" in project  # the backend is locked too
    for lock in re.findall(r"-r (\S+\.lock)", DOCKERFILE):
        pins = lock_pins(lock)
        assert pins and all(hashes for _, hashes in pins.values()), lock


def test_the_gpu_lock_keeps_the_runtime_lock_versions_and_replaces_only_onnxruntime():
    runtime, gpu = lock_pins("requirements-runtime.lock"), lock_pins("requirements-gpu.lock")
    shared = set(runtime) & set(gpu)
    assert shared and all(runtime[p][0] == gpu[p][0] for p in shared)
    assert "onnxruntime-gpu" in gpu and "onnxruntime" in runtime
    assert "pip uninstall -y onnxruntime" in DOCKERFILE

