"""TF: static transforms (/tf_static) as a tree, for the sensor-to-ego extrinsics of each sensor,
and the ego pose composed along a chain of transforms (map -> odom -> base_link) from /tf."""

from __future__ import annotations

from array import array
from collections import deque

import numpy as np

from jadd_dagster.camera import matrix_from_quaternion, quaternion_from_matrix
from jadd_dagster.ingest.mcap_reader import IngestError
from jadd_dagster.ingest.messages import MessageError, Transform
from jadd_dagster.ingest.streams import Clock

# A link of the chain other than the one nearest the ego frame is interpolated at a pose's time
# between its two transforms around it when they are at most this far apart (tf2, too, never
# extrapolates); a pose with no such pair is dropped, which leaves a gap in the pose.
LINK_MAX_GAP_S = 2.0
# Transforms kept of each frame not (yet) known to be on the chain: its link may join the chain
# later (when the link below it first arrives), and then needs its transforms around that time.
OFF_CHAIN_KEPT = 64


class StaticTree:
    """The latest static transform of each child frame (a frame has one parent in TF)."""

    def __init__(self) -> None:
        self._parent: dict[str, Transform] = {}

    def add(self, transform: Transform) -> None:
        self._parent[transform.child] = transform

    def __len__(self) -> int:
        return len(self._parent)

    def children(self) -> set[str]:
        """The frames that have a static parent."""
        return set(self._parent)

    def parent_of(self, frame: str) -> Transform | None:
        """The static transform of frame in its parent, None when it has none."""
        return self._parent.get(frame)

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


class _Link:
    """One dynamic link of the chain: the transforms of child in parent, in stamp order."""

    def __init__(self, parent: str, child: str):
        self.parent, self.child = parent, child
        self.clock = Clock()  # out of order: MessageError; a repeated stamp (overlapping files) is dropped
        self._values = array("d")  # x, y, z, qw, qx, qy, qz per transform

    def add(self, stamp_us: int, transform: Transform) -> bool:
        if not self.clock.accept(stamp_us):
            return False
        self._values.extend((*transform.translation, *transform.rotation))
        return True

    @property
    def name(self) -> str:
        return f"{self.parent} -> {self.child}"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(times µs (N,), values (N, 7))."""
        times = np.frombuffer(self.clock.times, dtype=np.int64)
        return times, np.frombuffer(self._values, dtype=np.float64).reshape(-1, 7)


class PoseChain:
    """The ego pose from TF messages: map_frame -> ... -> ego_frame, composed at each time of the
    chain's dynamic link nearest the ego frame (usually odom -> base_link, the fast one); every
    other dynamic link (map -> odom: slow, and it jumps) is interpolated there, linearly in
    position and by slerp in rotation (LINK_MAX_GAP_S), and static links come from /tf_static.

    Only the links of the chain are kept (64 bytes a transform); of other frames (wheels, sensors)
    only the last OFF_CHAIN_KEPT transforms each, in case the frame turns out to be on the chain.
    """

    def __init__(self, map_frame: str, ego_frame: str, static: StaticTree, topic: str, static_topic: str):
        self.map_frame, self.ego_frame = map_frame, ego_frame
        self.static, self.topic, self.static_topic = static, topic, static_topic
        self.links: dict[str, _Link] = {}  # child frame -> its link, for frames on the chain
        self.from_log_time = 0  # transforms kept whose stamp was zero: timed by log time
        self.duplicates = 0  # repeated transforms of the link the poses are at (split files overlapping)
        self.report: dict = {}
        self._off_chain: dict[str, deque] = {}  # child -> its last (stamp, from log time, transform)
        self._chain_frames: set[str] = set()
        self._statics_seen = -1
        self._children_seen: set[str] = set()

    def add(self, transform: Transform, log_time_us: int) -> None:
        """One transform of a TF message (stamped by log time when its stamp is zero)."""
        stamp, from_log = (transform.stamp_us, False) if transform.stamp_us is not None else (log_time_us, True)
        self._children_seen.add(transform.child)
        link = self.links.get(transform.child)
        if link is None and len(self.static) != self._statics_seen:  # a static link may have joined the chain
            self._walk()
            link = self.links.get(transform.child)
        if link is None:
            if transform.child not in self._chain_frames:
                kept = self._off_chain.setdefault(transform.child, deque(maxlen=OFF_CHAIN_KEPT))
                kept.append((stamp, from_log, transform))
                return
            link = self.links[transform.child] = _Link(transform.parent, transform.child)
            self._keep(link, stamp, from_log, transform)
            self._walk()
            return
        if transform.parent != link.parent:
            raise MessageError(f"frame {link.child!r} has parent {link.parent!r} and now {transform.parent!r} "
                               "(a TF frame has one parent)")
        self._keep(link, stamp, from_log, transform)

    def _keep(self, link: _Link, stamp: int, from_log: bool, transform: Transform) -> None:
        if link.add(stamp, transform) and from_log:
            self.from_log_time += 1

    def _walk(self) -> None:
        """Extend the chain from the ego frame up through the links known, as far as it goes."""
        self._statics_seen = len(self.static)
        frame, visited = self.ego_frame, set()
        while frame != self.map_frame and frame not in visited:  # a loop of frames ends the walk too
            visited.add(frame)
            self._chain_frames.add(frame)
            if frame in self.links:
                frame = self.links[frame].parent
            elif self.static.parent_of(frame) is not None:
                frame = self.static.parent_of(frame).parent
            elif frame in self._off_chain:  # a link seen before it was known to be on the chain
                kept = self._off_chain.pop(frame)
                self.links[frame] = link = _Link(kept[-1][2].parent, frame)
                for stamp, from_log, transform in kept:
                    if transform.parent == link.parent:
                        self._keep(link, stamp, from_log, transform)
                frame = link.parent
            else:
                break

    def _steps(self) -> list[_Link | Transform]:
        """The links from the ego frame up to the map frame; IngestError naming the frame where
        the chain breaks."""
        steps: list[_Link | Transform] = []
        frame, seen = self.ego_frame, set()
        while frame != self.map_frame:
            if frame in seen:
                raise IngestError(f"topic {self.topic} (pose): the TF frames from {self.ego_frame!r} up form a "
                                  f"loop at {frame!r}")
            seen.add(frame)
            step = self.links.get(frame) or self.static.parent_of(frame)
            if step is None:
                raise self._broken(frame, steps)
            steps.append(step)
            frame = step.parent
        return steps

    def _broken(self, frame: str, steps: list) -> IngestError:
        chain = " <- ".join([self.ego_frame] + [s.parent for s in steps])
        dynamic = [s for s in steps if isinstance(s, _Link)]
        when = (f" at {int(dynamic[0].clock.times[0])} µs, the first pose time" if dynamic else "")
        if not steps:
            children = sorted(self._children_seen | self.static.children())
            return IngestError(
                f"topic {self.topic} (pose): no transform into the ego frame {self.ego_frame!r} on {self.topic} or "
                f"{self.static_topic} (frames with a parent there: {children})")
        return IngestError(
            f"topic {self.topic} (pose): the TF chain from {self.map_frame!r} to {self.ego_frame!r} is broken: frame "
            f"{frame!r} has no parent on {self.topic} or {self.static_topic}{when} (the chain found: {chain}; "
            f"missing: the link from {self.map_frame!r} to {frame!r})")

    def poses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times µs (N,), positions (N, 3) metres, rotations (N, 4) [w, x, y, z]) of the ego frame
        in the map frame; fills report. IngestError when the chain is broken or no pose remains."""
        steps = self._steps()
        dynamic = [s for s in steps if isinstance(s, _Link)]
        if not dynamic:
            raise IngestError(f"topic {self.topic} (pose): every link from {self.map_frame!r} to {self.ego_frame!r} "
                              f"is static ({self.static_topic}): the ego never moves; the pose needs transforms on "
                              f"{self.topic}")
        times, _ = dynamic[0].arrays()
        self.duplicates = dynamic[0].clock.duplicates
        valid = np.ones(len(times), dtype=bool)
        dropped: dict[str, int] = {}
        poses: list[tuple[np.ndarray, np.ndarray]] = []
        for step in steps:
            if isinstance(step, Transform):
                poses.append((np.asarray(step.translation)[None, :], np.asarray(step.rotation)[None, :]))
                continue
            link_times, values = step.arrays()
            if step is dynamic[0]:
                poses.append((values[:, :3], values[:, 3:]))
                continue
            position, rotation, ok = _interpolate(link_times, values, times, LINK_MAX_GAP_S * 1e6)
            dropped[step.name] = int((valid & ~ok).sum())
            valid &= ok
            poses.append((position, rotation))
        if len(steps) == 1:
            position, rotation = poses[0]
        else:
            position, rotation = poses[-1]  # the top frame in the map frame, then down to the ego frame
            for child_position, child_rotation in reversed(poses[:-1]):
                position, rotation = _compose(child_position, child_rotation, position, rotation)
        self.report = {
            "frames": [self.map_frame] + [s.child for s in reversed(steps)],
            "links": [{"link": f"{s.parent} -> {s.child}", "kind": "dynamic" if isinstance(s, _Link) else "static",
                       "transforms": len(s.clock.times) if isinstance(s, _Link) else 1} for s in reversed(steps)],
            "poses_at": dynamic[0].name,
            "poses_dropped": dropped,
            "link_max_gap_s": LINK_MAX_GAP_S,
        }
        if not valid.any():
            worst = max(dropped, key=dropped.get)
            link = next(s for s in dynamic if s.name == worst)
            span = link.arrays()[0]
            raise IngestError(
                f"topic {self.topic} (pose): link {worst} has no two transforms within {LINK_MAX_GAP_S} s around any "
                f"pose time (its {len(span)} transforms from {int(span[0])} to {int(span[-1])} µs; the poses, at "
                f"{dynamic[0].name}, from {int(times[0])} to {int(times[-1])} µs)")
        position = np.broadcast_to(position, (len(times), 3))
        return times[valid], position[valid], np.broadcast_to(rotation, (len(times), 4))[valid]


def _interpolate(times: np.ndarray, values: np.ndarray, at: np.ndarray, max_gap_us: float):
    """A link's (positions, rotations, valid) at the times `at`: exact at its own times, between
    two of them at most max_gap_us apart interpolated; invalid outside (no extrapolation)."""
    after = np.searchsorted(times, at, side="right")  # times[after - 1] <= at < times[after]
    lo = np.clip(after - 1, 0, len(times) - 1)
    hi = np.clip(after, 0, len(times) - 1)
    exact = (after > 0) & (times[lo] == at)
    span = (times[hi] - times[lo]).astype(np.float64)
    inside = (after > 0) & (after < len(times)) & (span <= max_gap_us)
    fraction = np.where(inside & (span > 0), (at - times[lo]) / np.where(span > 0, span, 1.0), 0.0)
    fraction = np.where(exact, 0.0, fraction)
    position = values[lo, :3] + fraction[:, None] * (values[hi, :3] - values[lo, :3])
    return position, _slerp(values[lo, 3:], values[hi, 3:], fraction), exact | inside


def _slerp(q0: np.ndarray, q1: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical interpolation of unit quaternions [w, x, y, z], row by row."""
    dot = (q0 * q1).sum(axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    theta = np.arccos(np.clip(np.abs(dot), -1.0, 1.0))
    sine = np.sin(theta)
    near = sine < 1e-9
    safe = np.where(near, 1.0, sine)
    w0 = np.where(near, 1.0 - fraction, np.sin((1.0 - fraction) * theta) / safe)
    w1 = np.where(near, fraction, np.sin(fraction * theta) / safe)
    q = w0[:, None] * q0 + w1[:, None] * q1
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _quaternion_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectors v rotated by unit quaternions q [w, x, y, z] (rows broadcast)."""
    u, w = q[..., 1:], q[..., :1]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def _compose(child_position, child_rotation, parent_position, parent_rotation):
    """The pose of a frame in its grandparent from its pose in its parent and the parent's there."""
    position = parent_position + _rotate(parent_rotation, child_position)
    rotation = _quaternion_product(parent_rotation, child_rotation)
    return position, rotation / np.linalg.norm(rotation, axis=-1, keepdims=True)
