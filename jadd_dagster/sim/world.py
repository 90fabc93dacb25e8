"""Ground-truth objects for the synthetic logs: lanes and traffic of the ten nuScenes detection
classes (categories.py) around the ego.

The ego's own path is the road. Lanes run at fixed lateral offsets from it (right-hand traffic;
LANES): traffic with the ego on its right, two oncoming lanes on its left, a bike lane and a
parking lane on the right, sidewalks on both sides. Moving objects follow each other along their
lane with the intelligent driver model (IDM), slowing down for the lane's curves, so nothing drives
through anything in its lane; parked vehicles, construction zones (cones, barriers, a construction
vehicle) and standing pedestrians stay put. Where the road crosses itself, or an object would touch
the ego, the later-drawn object of the pair is left out altogether.

Objects are sampled at OBJECT_HZ on the log's clock and kept while within RELEVANT_M of the ego
(from the first to the last such sample, checked every RELEVANCE_EVERY samples). Boxes are
nuScenes-style: centre (x, y, z = height / 2) in the map frame, size [width, length, height] in
metres, yaw in rad about the map z axis (0 = map +x, the direction of the box's length); the
class table is categories.py, boxes and tracks logs/tracks.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from jadd_dagster.logs import format as fmt
from jadd_dagster.categories import CLASS_BY_NAME
from jadd_dagster.geometry import wrap_angle
from jadd_dagster.sim.drive import CAN_HZ, EGO_BOX_HALF_WIDTH, EGO_BOX_X, Drive

OBJECT_HZ = 10
RELEVANT_M = 100.0  # objects are kept while this close to the ego (centre to ego origin) ...
RELEVANCE_EVERY = 5  # ... checked every this many samples
LANE_STEP_M = 1.0  # lane polylines are resampled to this arc-length step
ROAD_EXTENSION_M = 150.0  # the road runs straight on this far before the log's start and after its end
BRAKE_LIMIT = 5.0  # m/s², the firmest braking the traffic model applies
CURVE_DECEL = 1.5  # m/s², how early drivers slow down for a curve
CURVE_GAIN = 2.0  # 1/s, how firmly they hold the curve's speed
EGO_MARGIN_M = 0.3  # an object closer than this to the ego's body counts as touching it
MOVING_MPS = 0.3  # slower than this is standing still (attributes)


@dataclass(frozen=True)
class Lane:
    """A lane: lateral offset from the ego path (metres, left positive), the direction its objects
    move (+1 with the ego, -1 against it, 0 parked), the lateral acceleration its movers accept on
    curves (m/s²), the objects that spawn in it as (class name, weight), their mean spacing along the
    lane (metres, bumper to bumper) and their desired speed range (m/s)."""

    offset: float
    direction: int
    lateral_accel: float = 2.5
    mix: tuple[tuple[str, float], ...] = ()
    spacing: float = 40.0
    speed: tuple[float, float] = (0.0, 0.0)


LANES = {
    "traffic": Lane(-3.5, 1, 2.5, (("car", 0.8), ("truck", 0.08), ("bus", 0.06), ("motorcycle", 0.04),
                                   ("construction_vehicle", 0.02)), 45.0, (9.0, 20.0)),
    "oncoming": Lane(3.5, -1, 2.5, (("car", 0.82), ("truck", 0.08), ("bus", 0.05), ("motorcycle", 0.05)), 45.0, (9.0, 20.0)),
    "oncoming_far": Lane(7.0, -1, 2.5, (("car", 0.8), ("truck", 0.12), ("bus", 0.04), ("motorcycle", 0.04)), 60.0, (10.0, 22.0)),
    "bike": Lane(-5.75, 1, 2.0, (("bicycle", 0.8), ("motorcycle", 0.2)), 150.0, (3.0, 7.0)),
    "walk_right": Lane(-10.6, 1, 1.0, (("pedestrian", 1.0),), 60.0, (1.0, 1.7)),
    "walk_right_back": Lane(-11.6, -1, 1.0, (("pedestrian", 1.0),), 60.0, (1.0, 1.7)),
    "walk_left": Lane(11.6, 1, 1.0, (("pedestrian", 1.0),), 60.0, (1.0, 1.7)),
    "walk_left_back": Lane(10.6, -1, 1.0, (("pedestrian", 1.0),), 60.0, (1.0, 1.7)),
    # Parked and standing objects: placed by _static_objects, not spawned as a stream.
    "parking": Lane(-8.0, 0),
    "cones": Lane(-6.6, 0),
    "barriers": Lane(-7.6, 0),
    "works": Lane(-8.6, 0),
    "stand_right": Lane(-12.6, 0),
    "stand_left": Lane(12.6, 0),
}
# IDM parameters per class: max acceleration a (m/s²), comfortable braking b (m/s²), time headway
# T (s), standstill gap s0 (m).
IDM = {
    "car": (1.6, 2.0, 1.2, 2.0), "truck": (1.0, 1.8, 1.5, 2.5), "bus": (1.0, 1.5, 1.5, 2.5),
    "construction_vehicle": (0.8, 1.5, 1.5, 2.5), "motorcycle": (2.2, 2.5, 1.0, 1.5),
    "bicycle": (1.0, 1.5, 1.0, 1.5), "pedestrian": (0.8, 1.0, 0.8, 0.6),
}


# --- lanes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LaneGeometry:
    """A lane polyline resampled every LANE_STEP_M of its own arc length u (0 at its start):
    points x, y (metres), heading (rad, unwrapped) and curvature (1/m) per vertex. Beyond its ends
    the lane goes on straight (positions are extrapolated along the end segments)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    curvature: np.ndarray

    @property
    def length(self) -> float:
        return (len(self.x) - 1) * LANE_STEP_M


def _road(drive: Drive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ego path as (x, y, heading) every LANE_STEP_M, extended straight at both ends."""
    step = np.hypot(np.diff(drive.x), np.diff(drive.y))
    s = np.concatenate([[0.0], np.cumsum(step)])
    moved = np.concatenate([[True], step > 1e-9])
    s_u, x_u, y_u, yaw_u = s[moved], drive.x[moved], drive.y[moved], drive.yaw[moved]
    grid = np.arange(-ROAD_EXTENSION_M, s_u[-1] + ROAD_EXTENSION_M + LANE_STEP_M, LANE_STEP_M)
    inside = np.clip(grid, 0.0, s_u[-1])
    heading = np.interp(inside, s_u, yaw_u)
    extra = grid - inside  # negative before the start, positive after the end: straight on
    x = np.interp(inside, s_u, x_u) + extra * np.cos(heading)
    y = np.interp(inside, s_u, y_u) + extra * np.sin(heading)
    return x, y, heading


def _lane_geometry(road: tuple[np.ndarray, np.ndarray, np.ndarray], offset: float) -> _LaneGeometry:
    """The curve at `offset` metres left of the road, with the loops an offset curve forms on the
    inside of curves tighter than the offset cut away, smoothed and resampled."""
    rx, ry, rh = road
    x, y = rx - offset * np.sin(rh), ry + offset * np.cos(rh)
    if offset != 0:
        # Offset points nearer than |offset| to the road around them lie inside a swallowtail loop.
        window = int(np.ceil(2.5 * abs(offset) / LANE_STEP_M)) + 1
        n = len(x)
        nearest = np.full(n, np.inf)
        for k in range(-window, window + 1):
            lo, hi = max(0, -k), min(n, n - k)
            d = np.hypot(x[lo:hi] - rx[lo + k:hi + k], y[lo:hi] - ry[lo + k:hi + k])
            nearest[lo:hi] = np.minimum(nearest[lo:hi], d)
        keep = nearest >= 0.98 * abs(offset)
        x, y = x[keep], y[keep]
    x, y = _resample(x, y)
    x, y = _smooth(x, 3.0), _smooth(y, 3.0)
    x, y = _resample(x, y)
    heading = np.unwrap(np.arctan2(np.diff(y), np.diff(x)))
    heading = np.concatenate([[heading[0]], (heading[1:] + heading[:-1]) / 2, [heading[-1]]])
    return _LaneGeometry(x, y, heading, np.gradient(heading, LANE_STEP_M))


def _resample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    keep = np.concatenate([[True], np.diff(s) > 1e-6])
    s, x, y = s[keep], x[keep], y[keep]
    grid = np.arange(0.0, s[-1] + 1e-9, LANE_STEP_M)
    return np.interp(grid, s, x), np.interp(grid, s, y)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (sigma in samples); odd reflection at the ends keeps straight ends straight."""
    half = int(3 * sigma)
    if len(values) < 2 * half + 2:
        return values
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([2 * values[0] - values[half:0:-1], values, 2 * values[-1] - values[-2:-half - 2:-1]])
    return np.convolve(padded, kernel, mode="valid")


class _Lanes:
    """All lanes' polylines concatenated, for looking many positions up at once."""

    def __init__(self, geometries: list[_LaneGeometry]):
        self.geometries = geometries
        sizes = np.array([len(g.x) for g in geometries])
        self.begin = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.last = self.begin + sizes - 1
        self.x, self.y, self.heading, self.curvature = (
            np.concatenate([getattr(g, f) for g in geometries]) for f in ("x", "y", "heading", "curvature"))

    def near(self, lane: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions x, y of arc lengths u along lanes, within centimetres (linear between vertices)."""
        idx = u / LANE_STEP_M
        i = np.clip(np.floor(idx).astype(np.int64), 0, self.last[lane] - self.begin[lane] - 1)
        j = self.begin[lane] + i
        w = idx - i
        return self.x[j] + w * (self.x[j + 1] - self.x[j]), self.y[j] + w * (self.y[j + 1] - self.y[j])

    def at(self, lane: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions x, y and headings of arc lengths u (metres) along lanes `lane` (indices).

        Cubic Hermite interpolation between vertices through their headings: the path is smooth
        (its heading changes continuously), so sampled motion shows the curvature, not the vertices.
        """
        idx = u / LANE_STEP_M
        i = np.clip(np.floor(idx).astype(np.int64), 0, self.last[lane] - self.begin[lane] - 1)
        j = self.begin[lane] + i
        w_all = idx - i
        w = np.clip(w_all, 0.0, 1.0)
        beyond = (w_all - w) * LANE_STEP_M  # metres past either end: straight on
        w2, w3 = w * w, w * w * w
        c = (2 * w3 - 3 * w2 + 1, w3 - 2 * w2 + w, -2 * w3 + 3 * w2, w3 - w2)
        dc = (6 * w2 - 6 * w, 3 * w2 - 4 * w + 1, -6 * w2 + 6 * w, 3 * w2 - 2 * w)
        h0, h1 = self.heading[j], self.heading[j + 1]
        t0 = (np.cos(h0) * LANE_STEP_M, np.sin(h0) * LANE_STEP_M)
        t1 = (np.cos(h1) * LANE_STEP_M, np.sin(h1) * LANE_STEP_M)
        points = []
        for axis, values in enumerate((self.x, self.y)):
            points.append(c[0] * values[j] + c[1] * t0[axis] + c[2] * values[j + 1] + c[3] * t1[axis])
        dx = dc[0] * self.x[j] + dc[1] * t0[0] + dc[2] * self.x[j + 1] + dc[3] * t1[0]
        dy = dc[0] * self.y[j] + dc[1] * t0[1] + dc[2] * self.y[j + 1] + dc[3] * t1[1]
        heading = np.arctan2(dy, dx)
        return points[0] + beyond * np.cos(heading), points[1] + beyond * np.sin(heading), heading


def _speed_limits(geometry: Lane, lane: _LaneGeometry) -> np.ndarray:
    """Speed (m/s) each vertex allows: the lateral-acceleration limit of the sharpest curvature
    within a few metres (a vehicle has a length), lowered ahead of curves so that braking at
    CURVE_DECEL reaches it (in the lane's direction of travel)."""
    bend = np.abs(lane.curvature)
    reach = 4
    padded = np.pad(bend, reach, mode="edge")
    sharpest = np.max([padded[i:i + len(bend)] for i in range(2 * reach + 1)], axis=0)
    limit = np.sqrt(geometry.lateral_accel / np.maximum(sharpest, 1e-4))
    ahead = (limit if geometry.direction > 0 else limit[::-1]).tolist()
    for i in range(len(ahead) - 2, -1, -1):
        ahead[i] = min(ahead[i], math.sqrt(ahead[i + 1] ** 2 + 2 * CURVE_DECEL * LANE_STEP_M))
    out = np.array(ahead)
    return out if geometry.direction > 0 else out[::-1]


# --- the world ----------------------------------------------------------------------------------


def simulate_world(rng: np.random.Generator, drive: Drive, start_time_us: int) -> pa.Table:
    """Object tracks around a drive: rows of fmt.OBJECT_COLUMNS at OBJECT_HZ on the log's clock
    (µs since the epoch), sorted by instance_id then timestamp_us."""
    names = list(LANES)
    road = _road(drive)
    lanes = _Lanes([_lane_geometry(road, LANES[n].offset) for n in names])
    steps = int(drive.t_us[-1] * OBJECT_HZ // 1_000_000) + 1
    ego_i = np.arange(steps) * (CAN_HZ // OBJECT_HZ)
    ego = (drive.x[ego_i], drive.y[ego_i], drive.yaw[ego_i])
    movers = _spawn_movers(rng, names, lanes, steps / OBJECT_HZ)
    statics = _static_objects(rng, names, lanes)
    rows = _simulate_movers(movers, names, lanes, ego, steps) + _static_rows(statics, lanes, ego)
    rows = _without_collisions(rows, ego)
    return _table(rows, start_time_us)


@dataclass
class _Object:
    """One object while building the world. lane: index into LANES; u: arc length along it (m)."""

    cls: str
    size: tuple[float, float, float]
    lane: int
    u: float
    speed: float = 0.0  # initial speed, m/s
    desired: float = 0.0  # desired speed, m/s
    yaw_offset: float = 0.0  # rad, added to the lane heading (parked or standing objects)
    attribute: str = ""
    stop_after: float = np.inf  # buses: stop once this far along (m) ...
    dwell: float = 0.0  # ... for this long (s)
    towing: "_Object | None" = None  # a trailer pulled 0.8 m behind


def _sized(rng: np.random.Generator, cls: str) -> tuple[float, float, float]:
    w, l, h = CLASS_BY_NAME[cls].size
    return tuple(float(v) for v in np.array([w, l, h]) * rng.uniform(0.9, 1.1, 3))  # type: ignore[return-value]


def _spawn_movers(rng: np.random.Generator, names: list[str], lanes: _Lanes, duration_s: float) -> list[_Object]:
    """Streams of moving objects along each moving lane, spread over every start position from
    which they could come within RELEVANT_M of the ego during the log."""
    movers = []
    for index, name in enumerate(names):
        lane = LANES[name]
        if lane.direction == 0:
            continue
        classes, weights = zip(*lane.mix)
        weights = np.array(weights) / sum(weights)
        reach = max(CLASS_BY_NAME[c].max_speed for c in classes) * duration_s + RELEVANT_M
        length = lanes.geometries[index].length
        lo, hi = (-reach, length) if lane.direction > 0 else (0.0, length + reach)
        cursor, before = lo + rng.uniform(0, lane.spacing), 0.0  # end of the previous unit; its speed
        while cursor < hi:
            cls = str(classes[rng.choice(len(classes), p=weights)])
            size = _sized(rng, cls)
            desired = float(rng.uniform(*lane.speed)) * (0.7 if cls in ("truck", "bus", "construction_vehicle") else 1.0)
            speed = desired * float(rng.uniform(0.6, 1.0))
            towing = _Object("trailer", _sized(rng, "trailer"), index, 0.0) if cls == "truck" and rng.uniform() < 0.3 else None
            total = size[1] + (towing.size[1] + 0.8 if towing else 0.0)
            # Far enough apart that the faster of the two needs no hard braking at the start.
            _, b, headway, s0 = IDM[cls]
            gap = s0 + headway * max(speed, before) + abs(speed - before) ** 2 / (2 * b) + rng.exponential(lane.spacing)
            obj = _Object(cls, size, index, cursor + gap + total / 2, speed=speed, desired=desired, towing=towing,
                          attribute="cycle.with_rider" if cls in ("bicycle", "motorcycle") else "")
            if cls == "bus" and rng.uniform() < 0.6:  # a bus stop ahead
                obj.stop_after, obj.dwell = float(rng.uniform(30, 400)), float(rng.uniform(8, 20))
            movers.append(obj)
            cursor, before = cursor + gap + total, speed
    return movers


def _static_objects(rng: np.random.Generator, names: list[str], lanes: _Lanes) -> list[_Object]:
    """Parked vehicles with construction zones between them, and standing pedestrians."""
    lane = {n: names.index(n) for n in names}
    out = []
    length = lanes.geometries[lane["parking"]].length
    u = rng.uniform(0, 10)
    while u < length:
        if rng.uniform() < 0.015:  # a construction zone: cones along the bike lane, barriers, a digger
            zone = float(rng.uniform(25, 45))
            for cone_u in np.arange(u, u + zone, 3.0):
                out.append(_Object("traffic_cone", _sized(rng, "traffic_cone"), lane["cones"], float(cone_u)))
            for bar_u in np.arange(u + 2.0, u + zone / 2, 3.0):
                out.append(_Object("barrier", _sized(rng, "barrier"), lane["barriers"], float(bar_u), yaw_offset=np.pi / 2))
            size = _sized(rng, "construction_vehicle")
            out.append(_Object("construction_vehicle", size, lane["works"], u + zone * 0.75,
                               yaw_offset=float(rng.choice([0.0, np.pi])), attribute="vehicle.parked"))
            u += zone + rng.uniform(3, 10)
            continue
        if rng.uniform() < 0.35:  # an empty stretch
            u += rng.exponential(25.0)
            continue
        cls = str(rng.choice(["car", "truck", "trailer", "motorcycle"], p=[0.86, 0.07, 0.03, 0.04]))
        size = _sized(rng, cls)
        attribute = "cycle.without_rider" if cls == "motorcycle" else "vehicle.parked"
        out.append(_Object(cls, size, lane["parking"], u + size[1] / 2, yaw_offset=float(rng.normal(0, 0.03)), attribute=attribute))
        u += size[1] + rng.uniform(1.0, 3.0)
    for side in ("stand_right", "stand_left"):
        geometry = lanes.geometries[lane[side]]
        u = rng.exponential(100.0)
        while u < geometry.length:
            facing = -np.pi / 2 if LANES[side].offset > 0 else np.pi / 2  # towards the road
            out.append(_Object("pedestrian", _sized(rng, "pedestrian"), lane[side], u,
                               yaw_offset=facing + float(rng.normal(0, 0.3)), attribute="pedestrian.standing"))
            u += rng.exponential(100.0) + 1.0
    return out


@dataclass
class _Rows:
    """Samples of one object: step indices k (at OBJECT_HZ from the log start) and its state."""

    cls: str
    size: tuple[float, float, float]
    k: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    attribute: np.ndarray
    order: int  # draw order: in a collision the later-drawn object is left out ...
    group: int  # ... with the objects of its group (a truck and the trailer it pulls)


def _simulate_movers(
    movers: list[_Object], names: list[str], lanes: _Lanes, ego: tuple, steps: int
) -> list[_Rows]:
    """IDM car following in every moving lane, twice: once to find when each object is within
    RELEVANT_M of the ego, once to record it then (keeps memory to the rows that are kept)."""
    if not movers:
        return []
    dt = 1.0 / OBJECT_HZ
    direction = np.array([LANES[names[m.lane]].direction for m in movers], dtype=np.float64)
    lane = np.array([m.lane for m in movers])
    # Progress p increases along each object's direction of travel: u = p * direction.
    # A truck and its trailer move as one unit; p is the centre of the unit.
    tow = np.array([m.towing.size[1] + 0.8 if m.towing else 0.0 for m in movers])
    length = np.array([m.size[1] for m in movers]) + tow
    p0 = np.array([m.u for m in movers]) * direction
    order = np.lexsort((p0, lane))
    leader = np.full(len(movers), -1)
    same = lane[order[1:]] == lane[order[:-1]]
    leader[order[:-1][same]] = order[1:][same]
    params = np.array([IDM[m.cls] for m in movers])
    a_max, b, headway, s0 = params.T
    desired = np.array([m.desired for m in movers])
    stop_after = np.array([m.stop_after for m in movers]) + p0
    dwell = np.array([m.dwell for m in movers])
    limit_all = np.concatenate([_speed_limits(LANES[n], g) for n, g in zip(names, lanes.geometries)])
    ex, ey, _ = ego
    speed0 = np.array([m.speed for m in movers])

    front = tow / 2  # from the unit's centre to the centres of the truck ...
    back = -np.array([(m.size[1] + 0.8) / 2 if m.towing else 0.0 for m in movers])  # ... and its trailer

    def curve_limit(p: np.ndarray) -> np.ndarray:
        """What the curves under a unit (both the truck and its trailer) allow, m/s."""
        top = lanes.last[lane] - lanes.begin[lane]
        idx = [np.clip(np.round((p + shift) * direction / LANE_STEP_M).astype(np.int64), 0, top) for shift in (front, back)]
        return np.minimum(limit_all[lanes.begin[lane] + idx[0]], limit_all[lanes.begin[lane] + idx[1]])

    def run(record: list | None, first: np.ndarray, last: np.ndarray):
        p, v = p0.copy(), np.minimum(speed0, curve_limit(p0))
        stop_at, waited = stop_after.copy(), np.zeros(len(movers))
        for k in range(steps):
            u = p * direction
            if record is None:
                if k % RELEVANCE_EVERY == 0 or k == steps - 1:
                    x, y = lanes.near(lane, u + tow / 2 * direction)
                    near = np.hypot(x - ex[k], y - ey[k]) < RELEVANT_M
                    first[near & (first < 0)] = k
                    last[near] = k
            else:
                live = np.flatnonzero((first <= k) & (last >= k))
                record.append((k, live, p[live].copy(), v[live].copy()))
            # The IDM towards the desired speed and behind the leader, and no faster than the curves allow.
            v_curve = curve_limit(p)
            v0 = np.maximum(np.minimum(desired, v_curve), 0.1)
            gap = np.where(leader >= 0, p[leader] - p - (length[leader] + length) / 2, np.inf)
            dv = v - np.where(leader >= 0, v[leader], v)
            # A bus heading for its stop treats the stop as a standing obstacle until it has waited.
            stop_gap = np.where(p < stop_at, stop_at - p - length / 2 + s0, np.inf)
            stopping = stop_gap < gap
            gap = np.where(stopping, stop_gap, gap)
            dv = np.where(stopping, v, dv)
            wanted = s0 + np.maximum(0.0, v * headway + v * dv / (2 * np.sqrt(a_max * b)))
            accel = a_max * (1 - (v / v0) ** 4 - (wanted / np.maximum(gap, 0.1)) ** 2)
            accel = np.minimum(accel, CURVE_GAIN * (v_curve - v))
            accel = np.clip(accel, -BRAKE_LIMIT, a_max)
            v_next = np.maximum(v + accel * dt, 0.0)
            p = p + (v + v_next) / 2 * dt
            waited += np.where((v_next < 0.05) & (np.abs(stop_at - p - length / 2) < s0 + 1.0), dt, 0.0)
            stop_at = np.where(waited >= dwell, -np.inf, stop_at)
            v = v_next

    first, last = np.full(len(movers), -1), np.full(len(movers), -2)
    run(None, first, last)
    record: list = []
    run(record, first, last)
    return _mover_rows(movers, record, first, last, lanes, direction, lane, tow)


def _mover_rows(movers, record, first, last, lanes, direction, lane, tow) -> list[_Rows]:
    """Per-object rows from the recorded (step, live objects, progress, speed) samples."""
    ks = np.concatenate([np.full(len(live), k) for k, live, _, _ in record]) if record else np.zeros(0, int)
    who = np.concatenate([live for _, live, _, _ in record]) if record else np.zeros(0, int)
    p = np.concatenate([pp for _, _, pp, _ in record]) if record else np.zeros(0)
    v = np.concatenate([vv for _, _, _, vv in record]) if record else np.zeros(0)
    order = np.lexsort((ks, who))
    ks, who, p, v = ks[order], who[order], p[order], v[order]
    bounds = np.searchsorted(who, np.arange(len(movers) + 1))
    rows = []
    for i, m in enumerate(movers):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        sign = direction[i]
        units = [(m, tow[i] / 2)] + ([(m.towing, -(m.size[1] + 0.8) / 2)] if m.towing else [])
        group = len(rows)
        for unit, shift in units:
            u = (p[lo:hi] + shift) * sign
            x, y, h = lanes.at(np.full(hi - lo, lane[i]), u)
            yaw = h + (np.pi if sign < 0 else 0.0)
            moving = v[lo:hi] > MOVING_MPS
            attribute = np.full(hi - lo, unit.attribute, dtype=object)
            if unit.cls == "pedestrian":
                attribute = np.where(moving, "pedestrian.moving", "pedestrian.standing")
            elif not unit.attribute:
                attribute = np.where(moving, "vehicle.moving", "vehicle.stopped")
            rows.append(_Rows(unit.cls, unit.size, ks[lo:hi], x, y, yaw, v[lo:hi], attribute, len(rows), group))
    return rows


def _static_rows(statics: list[_Object], lanes: _Lanes, ego: tuple) -> list[_Rows]:
    """Rows of parked and standing objects for the steps they are within RELEVANT_M of the ego."""
    if not statics:
        return []
    lane = np.array([s.lane for s in statics])
    x, y, h = lanes.at(lane, np.array([s.u for s in statics]))
    ex, ey, _ = ego
    rows = []
    for i, s in enumerate(statics):
        near = np.flatnonzero(np.hypot(ex - x[i], ey - y[i]) < RELEVANT_M)
        if len(near) == 0:
            continue
        k = np.arange(near[0], near[-1] + 1)
        n = len(k)
        attribute = np.full(n, s.attribute, dtype=object)
        rows.append(_Rows(s.cls, s.size, k, np.full(n, x[i]), np.full(n, y[i]), np.full(n, h[i] + s.yaw_offset),
                          np.zeros(n), attribute, 10_000_000 + i, 10_000_000 + i))
    return rows


def _without_collisions(rows: list[_Rows], ego: tuple) -> list[_Rows]:
    """Leave out objects that touch the ego, and the later-drawn object of every touching pair
    (a truck and its trailer are joined, not touching, and are left out together)."""
    if not rows:
        return rows
    rows = sorted(rows, key=lambda r: r.order)
    ex, ey, eyaw = ego
    obj = np.concatenate([np.full(len(r.k), i) for i, r in enumerate(rows)])
    k = np.concatenate([r.k for r in rows])
    x, y, yaw = (np.concatenate([getattr(r, f) for r in rows]) for f in ("x", "y", "yaw"))
    half = np.array([(r.size[1] / 2, r.size[0] / 2) for r in rows])[obj]
    # The ego box: its centre is ahead of the pose origin.
    ego_cx = (EGO_BOX_X[0] + EGO_BOX_X[1]) / 2
    ego_half = np.array([(EGO_BOX_X[1] - EGO_BOX_X[0]) / 2, EGO_BOX_HALF_WIDTH])
    ecx = ex[k] + ego_cx * np.cos(eyaw[k])
    ecy = ey[k] + ego_cx * np.sin(eyaw[k])
    touch = _boxes_touch(x, y, yaw, half, ecx, ecy, eyaw[k], np.broadcast_to(ego_half, half.shape), EGO_MARGIN_M)
    group = np.array([r.group for r in rows])
    dropped = set(group[np.unique(obj[touch])].tolist())
    # Pairs of objects at the same step: bounding circles first, then the boxes themselves.
    by_step = np.argsort(k, kind="stable")
    bounds = np.searchsorted(k[by_step], np.arange(k.max() + 2))
    radius = np.hypot(half[:, 0], half[:, 1])
    pairs = []
    for step in range(len(bounds) - 1):
        at = by_step[bounds[step]:bounds[step + 1]]
        if len(at) < 2:
            continue
        i, j = _pairs(len(at))
        a, c = at[i], at[j]
        close = (np.hypot(x[a] - x[c], y[a] - y[c]) < radius[a] + radius[c]) & (group[obj[a]] != group[obj[c]])
        if close.any():
            pairs.append((a[close], c[close]))
    if pairs:
        a = np.concatenate([p[0] for p in pairs])
        c = np.concatenate([p[1] for p in pairs])
        hit = _boxes_touch(x[a], y[a], yaw[a], half[a], x[c], y[c], yaw[c], half[c])
        for i, j in sorted({(min(p, q), max(p, q)) for p, q in zip(obj[a][hit], obj[c][hit])}):
            if group[i] not in dropped and group[j] not in dropped:
                dropped.add(group[j])
    return [r for r in rows if r.group not in dropped]


@lru_cache(maxsize=512)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def _boxes_touch(ax, ay, ayaw, ahalf, bx, by, byaw, bhalf, margin: float = 0.0) -> np.ndarray:
    """Whether pairs of 2-D boxes (centres, yaws, half length/width) come within margin metres:
    no separating axis among the four box edges (vectorised over pairs)."""
    dx, dy = bx - ax, by - ay
    axes_a = [(np.cos(ayaw), np.sin(ayaw)), (-np.sin(ayaw), np.cos(ayaw))]
    axes_b = [(np.cos(byaw), np.sin(byaw)), (-np.sin(byaw), np.cos(byaw))]
    touching = np.ones(len(ax), dtype=bool)
    for nx, ny in axes_a + axes_b:
        reach = sum(np.abs(nx * ux + ny * uy) * h for (ux, uy), h in zip(axes_a, (ahalf[:, 0], ahalf[:, 1])))
        reach = reach + sum(np.abs(nx * ux + ny * uy) * h for (ux, uy), h in zip(axes_b, (bhalf[:, 0], bhalf[:, 1])))
        touching &= np.abs(nx * dx + ny * dy) < reach + margin
    return touching


def _table(rows: list[_Rows], start_time_us: int) -> pa.Table:
    """The objects table, instance ids numbered in order of first appearance."""
    rows = sorted(rows, key=lambda r: (int(r.k[0]), r.order))
    columns: dict[str, list] = {c: [] for c in fmt.OBJECT_COLUMNS}
    for n, r in enumerate(rows):
        count = len(r.k)
        yaw = wrap_angle(r.yaw)
        columns["instance_id"].append(np.full(count, f"obj-{n:05d}", dtype=object))
        columns["category"].append(np.full(count, CLASS_BY_NAME[r.cls].category, dtype=object))
        columns["timestamp_us"].append(start_time_us + r.k.astype(np.int64) * (1_000_000 // OBJECT_HZ))
        columns["x"].append(r.x)
        columns["y"].append(r.y)
        columns["z"].append(np.full(count, r.size[2] / 2))
        columns["yaw"].append(yaw)
        for name, value in zip(("width", "length", "height"), r.size):
            columns[name].append(np.full(count, value))
        columns["vx"].append(r.speed * np.cos(r.yaw))
        columns["vy"].append(r.speed * np.sin(r.yaw))
        columns["attribute"].append(r.attribute.astype(object))
    types = {"instance_id": pa.string(), "category": pa.string(), "attribute": pa.string(), "timestamp_us": pa.int64()}
    arrays = {}
    for name in fmt.OBJECT_COLUMNS:
        values = np.concatenate(columns[name]) if columns[name] else np.zeros(0)
        kind = types.get(name, pa.float64())
        arrays[name] = pa.array(values.tolist() if kind == pa.string() else values, kind)
    return pa.table(arrays)
