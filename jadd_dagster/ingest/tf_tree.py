"""Static transforms (/tf_static) as a tree, for the sensor-to-ego extrinsics of each sensor."""

from __future__ import annotations

import numpy as np

from jadd_dagster.camera import matrix_from_quaternion, quaternion_from_matrix
from jadd_dagster.ingest.messages import Transform


class StaticTree:
    """The latest static transform of each child frame (a frame has one parent in TF)."""

    def __init__(self) -> None:
        self._parent: dict[str, Transform] = {}

    def add(self, transform: Transform) -> None:
        self._parent[transform.child] = transform

    def __len__(self) -> int:
        return len(self._parent)

    def _to_root(self, frame: str) -> tuple[list[str], np.ndarray]:
        """The frames from frame up to its root, and the 4x4 pose of frame in the root."""
        chain, pose = [frame], np.eye(4)
        while frame in self._parent and len(chain) <= len(self._parent) + 1:
            t = self._parent[frame]
            step = np.eye(4)
            step[:3, :3] = matrix_from_quaternion(t.rotation)
            step[:3, 3] = t.translation
            pose = step @ pose
            frame = t.parent
            chain.append(frame)
        return chain, pose

    def pose_in(self, frame: str, reference: str) -> tuple[tuple[float, float, float], tuple[float, float, float, float]] | None:
        """frame's pose in reference: translation (metres, frame's origin in reference) and rotation
        (frame-to-reference [w, x, y, z]); None when the two frames are not in one tree."""
        chain, frame_in_root = self._to_root(frame)
        reference_chain, reference_in_root = self._to_root(reference)
        if chain[-1] != reference_chain[-1]:
            return None
        relative = np.linalg.inv(reference_in_root) @ frame_in_root
        translation = tuple(float(v) for v in relative[:3, 3])
        return translation, quaternion_from_matrix(relative[:3, :3])  # type: ignore[return-value]
