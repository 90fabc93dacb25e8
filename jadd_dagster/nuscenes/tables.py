"""The 13 nuScenes tables: names, static tables, scene naming and the record builders of one scene.

Records follow the nuScenes schema (docs/schema_nuscenes.md of the devkit): timestamps are integer µs,
translations metres, rotations unit quaternions [w, x, y, z], and every token is make_token() of
stable ids, except visibility, whose tokens are nuScenes' own "1".."4" because tools compare them
(e.g. the devkit's export_instance_videos.py, mmdet3d's 2D-annotation export filter on '1'..'4').
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from jadd_dagster.nuscenes.tokens import make_token
from jadd_dagster.scene_record import SceneRecord

# The devkit's load order (NuScenes.table_names).
TABLE_NAMES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
# Tables that grow with the number of scenes: streamed to disk record by record.
STREAMED_TABLES = ("scene", "sample", "sample_data", "ego_pose", "instance", "sample_annotation")

# nuScenes categories in the nuScenes-lidarseg index order (index = position), which is also the order
# of the devkit's colormap (nuscenes.utils.color_map); the first 23 after "noise" are the annotation
# classes of nuScenes detection.
CATEGORIES = (
    ("noise", "Points that are not correctly measured or cannot be labelled."),
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle, e.g. skateboard, segway."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull, e.g. dollies, carts."),
    ("movable_object.trafficcone", "All types of traffic cones."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, SUVs, vans."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on."),
    ("flat.other", "All other forms of horizontal ground-level structures."),
    ("flat.sidewalk", "Sidewalks, pedestrian walkways, bike paths, etc."),
    ("flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation."),
    ("static.manmade", "Man-made structures, e.g. buildings, walls, guard rails, poles."),
    ("static.other", "Points in the background that are not distinguishable."),
    ("static.vegetation", "Any vegetation in the frame that is higher than the ground."),
    ("vehicle.ego", "The vehicle on which the cameras are mounted."),
)
ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)
# (token, level, description) exactly as nuScenes.
VISIBILITY = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
VISIBILITY_BOUNDS = (0.4, 0.6, 0.8)  # the upper bounds of the first three levels


def visibility_level(share: float) -> str:
    """The nuScenes visibility level ('v0-40' ... 'v80-100') of a visible share of an object (0..1)."""
    index = sum(share >= bound for bound in VISIBILITY_BOUNDS)
    return VISIBILITY[index][1]


CATEGORY_TOKENS = {name: make_token("category", name) for name, _ in CATEGORIES}
ATTRIBUTE_TOKENS = {name: make_token("attribute", name) for name, _ in ATTRIBUTES}
VISIBILITY_TOKENS = {level: token for token, level, _ in VISIBILITY}

MAP_CATEGORY = "semantic_prior"
MAP_MARGIN_M = 20.0  # map beyond the driven path's largest x and y
# The side of the square one map raster covers at most (16,000 px at the devkit's 0.1 m): a log's
# scenes share a map while they fit in one window, so no drive's extent sizes a raster
# (nuscenes.writer.MapWindows). A scene's own path must fit in a window with its margins.
MAP_WINDOW_M = 1_600.0
MAX_SCENE_EXTENT_M = MAP_WINDOW_M - 2 * MAP_MARGIN_M

# NuScenesCanBus (devkit 1.2.0, can_bus_api.py) refuses CAN data of these scene numbers
# (can_blacklist) and warns about them (route_blacklist with the default max_misalignment, and 419 for
# vehicle_monitor), so our scene names never use them.
CAN_BLACKLIST = (
    161, 162, 163, 164, 165, 166, 167, 168, 170, 171, 172, 173, 174, 175, 176, 309, 310, 311, 312, 313, 314,
)
ROUTE_BLACKLIST = (
    71, 73, 74, 75, 76, 85, 100, 101, 106, 107, 108, 109, 110, 112, 113, 114, 115, 116, 117, 118, 119,
    261, 262, 263, 264, 276, 302, 303, 304, 305, 306, 334, 388, 389, 390, 436, 499, 500, 501, 502, 504,
    505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 517, 518, 547, 548, 549, 550, 551, 556, 557,
    558, 559, 560, 561, 562, 563, 564, 565, 730, 731, 733, 734, 735, 736, 737, 738, 778, 780, 781, 782,
    783, 784, 904, 905, 1073, 1074,
)
SCENE_NUMBER_BLACKLIST = frozenset(CAN_BLACKLIST) | frozenset(ROUTE_BLACKLIST) | {419}


def scene_numbers() -> Iterator[int]:
    """The usable scene numbers in order: 1..9999 without the devkit's blacklisted ones."""
    return (n for n in range(1, 10000) if n not in SCENE_NUMBER_BLACKLIST)


MAX_SCENES = sum(1 for _ in scene_numbers())


def scene_name(number: int) -> str:
    """nuScenes scene name: 'scene-' and 4 digits (the CAN bus API asserts ^scene-\\d\\d\\d\\d$)."""
    if not 0 <= number <= 9999:
        raise ValueError(f"scene number {number} does not fit 4 digits")
    return f"scene-{number:04d}"


def static_tables() -> dict[str, list[dict]]:
    """category, attribute and visibility: the same in every version folder."""
    return {
        "category": [
            {"token": CATEGORY_TOKENS[name], "name": name, "description": description, "index": index}
            for index, (name, description) in enumerate(CATEGORIES)
        ],
        "attribute": [
            {"token": ATTRIBUTE_TOKENS[name], "name": name, "description": description}
            for name, description in ATTRIBUTES
        ],
        "visibility": [{"token": token, "level": level, "description": d} for token, level, d in VISIBILITY],
    }


def modality_of(channel: str) -> str:
    """nuScenes sensor modality of a channel name: camera, lidar or radar."""
    if channel.startswith("LIDAR"):
        return "lidar"
    if channel.startswith("RADAR"):
        return "radar"
    return "camera"


def sensor_record(channel: str) -> dict:
    return {"token": make_token("sensor", channel), "channel": channel, "modality": modality_of(channel)}


def _unit_quaternion(q: Sequence[float]) -> list[float]:
    values = [float(v) for v in q]
    if len(values) != 4:
        raise ValueError(f"quaternion must have 4 components [w, x, y, z], got {len(values)}")
    norm = math.sqrt(sum(v * v for v in values))
    if not norm > 1e-9 or not math.isfinite(norm):
        raise ValueError(f"quaternion {values} has no usable norm")
    return [v / norm for v in values]


def calibrated_sensor_record(log_id: str, calibration: Mapping) -> dict:
    """calibrated_sensor of one channel of a log with the given CameraCalibration.to_json(), or for a
    lidar or radar its LidarCalibration.to_json() ({channel, translation, rotation}).

    camera_intrinsic is the 3x3 matrix of the written images ([] for a lidar or radar, as nuScenes);
    a non-zero lens distortion (images written without undistortion) is kept in the extra key
    camera_distortion (OpenCV k1 k2 p1 p2 k3).
    """
    channel = str(calibration["channel"])
    is_camera = modality_of(channel) == "camera"
    intrinsic = [[float(v) for v in row] for row in calibration["intrinsic"]] if is_camera else []
    if is_camera and (len(intrinsic) != 3 or any(len(row) != 3 for row in intrinsic)):
        raise ValueError(f"{channel}: intrinsic must be a 3x3 matrix")
    translation = [float(v) for v in calibration["translation"]]
    if len(translation) != 3:
        raise ValueError(f"{channel}: translation must have 3 components")
    rotation = _unit_quaternion(calibration["rotation"])
    distortion = [float(v) for v in calibration.get("distortion", ())]
    size = [calibration.get("width"), calibration.get("height")]
    identity = json.dumps([translation, rotation, intrinsic, distortion, size])
    record = {
        "token": make_token("calibrated_sensor", log_id, channel, identity),
        "sensor_token": make_token("sensor", channel),
        "translation": translation,
        "rotation": rotation,
        "camera_intrinsic": intrinsic,
    }
    if any(abs(v) > 0 for v in distortion):
        record["camera_distortion"] = distortion
    return record


def log_token(log_id: str) -> str:
    return make_token("log", log_id)


def map_token(log_id: str) -> str:
    return make_token("map", log_id)


def log_record(record: SceneRecord) -> dict:
    return {
        "token": log_token(record.log_id),
        "logfile": record.log_id,
        "vehicle": record.vehicle,
        "date_captured": record.date_captured,
        "location": record.location,
    }


def map_record(log_id: str) -> dict:
    """The map of one log: a semantic-prior mask PNG under maps/ (see nuscenes.map_mask)."""
    token = map_token(log_id)
    return {
        "token": token,
        "log_tokens": [log_token(log_id)],
        "category": MAP_CATEGORY,
        "filename": f"maps/{token}.png",
    }


def scene_key(record: SceneRecord) -> str:
    """Stable identity of a sampled scene: scene id and sampling profile."""
    return f"{record.scene_id}@{record.profile}"


# sample_data fileformat and file extension per sensor modality (radar is not written yet).
FILE_FORMATS = {"camera": ("jpg", ".jpg"), "lidar": ("pcd", ".pcd.bin")}


def sample_tokens(record: SceneRecord) -> list[str]:
    """The tokens of a scene's samples, one per keyframe time, in order (tokens are derived, so
    they are known without opening the tables)."""
    key = scene_key(record)
    return [make_token("sample", key, int(t)) for t in record.keyframe_times_us]


def sample_data_filename(log_id: str, channel: str, timestamp_us: int, is_key_frame: bool) -> str:
    """Path relative to the dataroot, nuScenes style: samples/ for keyframes, sweeps/ otherwise;
    JPEGs for cameras, .pcd.bin point clouds for lidars."""
    folder = "samples" if is_key_frame else "sweeps"
    safe_log = log_id.replace("/", "-").replace("\\", "-")
    extension = FILE_FORMATS[modality_of(channel)][1]
    return f"{folder}/{channel}/{safe_log}__{channel}__{int(timestamp_us)}{extension}"


def scene_description(record: SceneRecord) -> str:
    """Our stable scene id first, then a short summary."""
    duration_s = (record.end_time_us - record.start_time_us) / 1e6
    cameras = sum(1 for channel in record.cameras if modality_of(channel) == "camera")
    lidars = sum(1 for channel in record.cameras if modality_of(channel) == "lidar")
    return (
        f"{record.scene_id}; profile {record.profile}, {duration_s:.1f} s, "
        f"{len(record.keyframe_times_us)} samples at {record.keyframe_hz:g} Hz, {cameras} cameras"
        + (f", {lidars} lidar" if lidars else "")
    )


@dataclass
class SceneTables:
    """All records of one scene, ready to be appended to the tables (scene['name'] is set later).

    links pairs each frame's path (relative to the scene folder) with its filename (relative to the
    dataroot); trajectory_xy lists the ego positions (metres, map frame) in time order.
    """

    scene: dict
    log: dict
    map: dict
    sensors: list[dict]
    calibrated_sensors: list[dict]
    samples: list[dict]
    sample_data: list[dict]
    ego_poses: list[dict]
    instances: list[dict] = field(default_factory=list)
    sample_annotations: list[dict] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    trajectory_xy: list[tuple[float, float]] = field(default_factory=list)


def checked_trajectory(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ego path of one scene; a ValueError when it spans more than a map window holds
    (MAX_SCENE_EXTENT_M, 1,560 m: 78 m/s for 20 s), which only a broken pose makes."""
    if xy:
        span_x = max(x for x, _ in xy) - min(x for x, _ in xy)
        span_y = max(y for _, y in xy) - min(y for _, y in xy)
        if max(span_x, span_y) > MAX_SCENE_EXTENT_M:
            raise ValueError(f"the ego path spans {span_x:,.0f} m x {span_y:,.0f} m in one scene, more than a map "
                             f"window holds ({MAX_SCENE_EXTENT_M:,.0f} m): check the log's pose for jumps")
    return xy


def build_scene_tables(record: SceneRecord, annotations: Sequence[Mapping] = ()) -> SceneTables:
    """Records of one scene; raises ValueError when the record breaks the SceneRecord contract.

    Samples are the keyframe times; each frame becomes one sample_data with its own ego_pose; a sweep
    belongs to the following sample (the first keyframe time >= its timestamp); prev/next chain the
    samples and each channel's frames within the scene. annotations: see annotation_tables().
    """
    key = scene_key(record)
    times = [int(t) for t in record.keyframe_times_us]
    if not times:
        raise ValueError("scene has no keyframes")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("keyframe_times_us must be strictly increasing")
    keyframe_tokens = sample_tokens(record)
    scene_token = make_token("scene", key)
    samples = [
        {
            "token": token,
            "timestamp": t,
            "prev": keyframe_tokens[i - 1] if i > 0 else "",
            "next": keyframe_tokens[i + 1] if i + 1 < len(times) else "",
            "scene_token": scene_token,
        }
        for i, (token, t) in enumerate(zip(keyframe_tokens, times))
    ]

    calibrated = {}
    for channel, calibration in record.cameras.items():
        if str(calibration.get("channel", channel)) != channel:
            raise ValueError(f"calibration of {channel} names channel {calibration.get('channel')}")
        calibrated[channel] = calibrated_sensor_record(record.log_id, {**calibration, "channel": channel})

    by_channel: dict[str, list] = {}
    for frame in record.frames:
        if frame.channel not in calibrated:
            raise ValueError(f"frame {frame.path} of channel {frame.channel} has no calibration")
        if modality_of(frame.channel) not in FILE_FORMATS:
            raise ValueError(f"frame {frame.path}: {modality_of(frame.channel)} channels are not supported")
        by_channel.setdefault(frame.channel, []).append(frame)
    if not by_channel:
        raise ValueError("scene has no frames")

    sample_data: list[dict] = []
    ego_poses: list[dict] = []
    links: list[tuple[str, str]] = []
    poses_by_time: dict[int, tuple[float, float]] = {}
    for channel in sorted(by_channel):
        frames = sorted(by_channel[channel], key=lambda f: int(f.timestamp_us))
        stamps = [int(f.timestamp_us) for f in frames]
        if len(set(stamps)) != len(stamps):
            raise ValueError(f"{channel}: two frames share a timestamp")
        keyframes = sorted(-1 if f.keyframe_index is None else int(f.keyframe_index) for f in frames if f.is_key_frame)
        if keyframes != list(range(len(times))):
            raise ValueError(f"{channel}: needs exactly one keyframe per sample (0..{len(times) - 1}), got {keyframes}")
        calibration = record.cameras[channel]
        fileformat = FILE_FORMATS[modality_of(channel)][0]
        # Point clouds have no image size: nuScenes writes 0 x 0 for them.
        size = (int(calibration["width"]), int(calibration["height"])) if fileformat == "jpg" else (0, 0)
        tokens = [make_token("sample_data", key, channel, t) for t in stamps]
        for i, frame in enumerate(frames):
            t = stamps[i]
            if frame.is_key_frame:
                sample_index = int(frame.keyframe_index)
            else:
                sample_index = bisect.bisect_left(times, t)
                if sample_index == len(times):
                    raise ValueError(f"{channel}: sweep at {t} µs lies after the last keyframe")
            if (int(frame.width), int(frame.height)) != size:
                raise ValueError(f"{frame.path}: size {frame.width}x{frame.height} is not {size[0]}x{size[1]}")
            pose_token = make_token("ego_pose", key, channel, t)
            translation = [float(v) for v in frame.ego_pose.translation]
            if len(translation) != 3 or not all(math.isfinite(v) for v in translation):
                raise ValueError(f"{frame.path}: ego translation must be 3 finite numbers")
            rotation = _unit_quaternion(frame.ego_pose.rotation)
            ego_poses.append({"token": pose_token, "timestamp": t, "rotation": rotation, "translation": translation})
            filename = sample_data_filename(record.log_id, channel, t, frame.is_key_frame)
            sample_data.append(
                {
                    "token": tokens[i],
                    "sample_token": keyframe_tokens[sample_index],
                    "ego_pose_token": pose_token,
                    "calibrated_sensor_token": calibrated[channel]["token"],
                    "timestamp": t,
                    "fileformat": fileformat,
                    "is_key_frame": bool(frame.is_key_frame),
                    "height": int(frame.height),
                    "width": int(frame.width),
                    "filename": filename,
                    "prev": tokens[i - 1] if i > 0 else "",
                    "next": tokens[i + 1] if i + 1 < len(frames) else "",
                }
            )
            links.append((frame.path, filename))
            poses_by_time.setdefault(t, (translation[0], translation[1]))

    instances, sample_annotations = annotation_tables(key, keyframe_tokens, annotations)
    scene = {
        "token": scene_token,
        "log_token": log_token(record.log_id),
        "nbr_samples": len(samples),
        "first_sample_token": keyframe_tokens[0],
        "last_sample_token": keyframe_tokens[-1],
        "name": "",
        "description": scene_description(record),
    }
    used = sorted(by_channel)
    return SceneTables(
        scene=scene,
        log=log_record(record),
        map=map_record(record.log_id),
        sensors=[sensor_record(c) for c in used],
        calibrated_sensors=[calibrated[c] for c in used],
        samples=samples,
        sample_data=sample_data,
        ego_poses=ego_poses,
        instances=instances,
        sample_annotations=sample_annotations,
        links=links,
        trajectory_xy=checked_trajectory([poses_by_time[t] for t in sorted(poses_by_time)]),
    )


def annotation_tables(
    key: str, sample_tokens: Sequence[str], annotations: Sequence[Mapping]
) -> tuple[list[dict], list[dict]]:
    """instance and sample_annotation records of one scene's 3D boxes.

    Each annotation is a mapping with
        instance_id   stable id of the tracked object within the scene (str)
        keyframe_index  index of the sample (keyframe) it annotates
        category      a nuScenes category name, e.g. 'vehicle.car'
        translation   box centre [x, y, z] in the map frame, metres
        size          [width, length, height], metres
        rotation      box-to-map quaternion [w, x, y, z]
    and optionally attributes (list of attribute names), visibility (a level such as 'v80-100', or ''),
    num_lidar_pts and num_radar_pts (ints, default 0; the nuScenes detection evaluation drops boxes
    with neither). An instance's annotations are chained by prev/next in sample order.
    """
    tracks: dict[str, dict[int, Mapping]] = {}
    for ann in annotations:
        instance_id = str(ann["instance_id"])
        index = int(ann["keyframe_index"])
        if not 0 <= index < len(sample_tokens):
            raise ValueError(f"annotation of {instance_id}: keyframe_index {index} out of range")
        if index in tracks.setdefault(instance_id, {}):
            raise ValueError(f"annotation of {instance_id}: two boxes on keyframe {index}")
        tracks[instance_id][index] = ann
    instances: list[dict] = []
    records: list[dict] = []
    for instance_id in sorted(tracks):
        track = tracks[instance_id]
        indices = sorted(track)
        categories = {str(track[i]["category"]) for i in indices}
        if len(categories) != 1 or next(iter(categories)) not in CATEGORY_TOKENS:
            raise ValueError(f"instance {instance_id}: needs one known nuScenes category, got {sorted(categories)}")
        tokens = [make_token("sample_annotation", key, instance_id, i) for i in indices]
        for n, i in enumerate(indices):
            ann = track[i]
            translation = [float(v) for v in ann["translation"]]
            size = [float(v) for v in ann["size"]]
            if len(translation) != 3 or len(size) != 3 or min(size) <= 0:
                raise ValueError(f"instance {instance_id}: translation needs 3 values and size 3 positive values")
            attributes = [str(a) for a in ann.get("attributes", ())]
            unknown = [a for a in attributes if a not in ATTRIBUTE_TOKENS]
            visibility = str(ann.get("visibility", "") or "")
            if unknown or (visibility and visibility not in VISIBILITY_TOKENS):
                raise ValueError(f"instance {instance_id}: unknown attributes {unknown} or visibility {visibility!r}")
            records.append(
                {
                    "token": tokens[n],
                    "sample_token": sample_tokens[i],
                    "instance_token": make_token("instance", key, instance_id),
                    "visibility_token": VISIBILITY_TOKENS.get(visibility, ""),
                    "attribute_tokens": [ATTRIBUTE_TOKENS[a] for a in attributes],
                    "translation": translation,
                    "size": size,
                    "rotation": _unit_quaternion(ann["rotation"]),
                    "prev": tokens[n - 1] if n > 0 else "",
                    "next": tokens[n + 1] if n + 1 < len(indices) else "",
                    "num_lidar_pts": int(ann.get("num_lidar_pts", 0)),
                    "num_radar_pts": int(ann.get("num_radar_pts", 0)),
                }
            )
        instances.append(
            {
                "token": make_token("instance", key, instance_id),
                "category_token": CATEGORY_TOKENS[next(iter(categories))],
                "nbr_annotations": len(indices),
                "first_annotation_token": tokens[0],
                "last_annotation_token": tokens[-1],
            }
        )
    return instances, records
