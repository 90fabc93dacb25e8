"""A preview of a built dataset: one keyframe with its boxes, drawn by the nuScenes devkit.

The devkit itself moves the sample_annotations into the camera frame (NuScenes.get_sample_data)
and draws them (Box.render_cv2), so the preview shows what a user of the dataset will get: boxes
that sit on their objects, or not. It goes into the dataset run's metadata and next to the
dataroot as preview.jpg.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

# Wide enough to read the boxes in the UI, where it is shown at this size; smaller frames are
# scaled up before the boxes are drawn, so the lines stay sharp.
PREVIEW_WIDTH_PX = 960
JPEG_QUALITY = 85
PREFERRED_CAMERAS = ("CAM_FRONT",)


def preview_jpeg(dataroot: Path, version: str, fetch: Callable[[str, Path], None]) -> bytes | None:
    """JPEG of the middle keyframe of the first scene, seen by CAM_FRONT (or the first camera by
    name), with its annotations drawn; None when the version has no camera keyframe.

    dataroot holds the version folder (its tables) and maps/; fetch(filename, target) places the image,
    named as in sample_data, at target (the frames may live in an object store).
    """
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.geometry_utils import BoxVisibility

    with tempfile.TemporaryDirectory(prefix="jadd-preview-") as tmp:
        view = Path(tmp)
        for folder in (version, "maps"):  # the devkit opens the map masks with the tables
            if (Path(dataroot) / folder).is_dir():
                os.symlink(Path(dataroot).resolve() / folder, view / folder)
        nusc = NuScenes(version=version, dataroot=str(view), verbose=False)
        if not nusc.scene:
            return None
        tokens, token = [], nusc.scene[0]["first_sample_token"]
        while token:  # the first scene's samples, in time order
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
        data = nusc.get("sample", tokens[len(tokens) // 2])["data"]
        cameras = [c for c in data if nusc.get("sample_data", data[c])["sensor_modality"] == "camera"]
        if not cameras:
            return None
        channel = next((c for c in PREFERRED_CAMERAS if c in cameras), sorted(cameras)[0])
        record = nusc.get("sample_data", data[channel])
        fetch(record["filename"], view / record["filename"])
        path, boxes, intrinsic = nusc.get_sample_data(data[channel], box_vis_level=BoxVisibility.ANY)
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{record['filename']}: the preview's keyframe image is unreadable")
        scale = PREVIEW_WIDTH_PX / image.shape[1]
        image = cv2.resize(image, (PREVIEW_WIDTH_PX, round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        view = np.diag([scale, scale, 1.0]) @ np.asarray(intrinsic)  # the camera of the resized image
        for box in boxes:
            box.render_cv2(image, view=view, normalize=True, linewidth=2)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes() if ok else None
