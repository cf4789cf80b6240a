"""Frame sources for the camera reader: the simulated world, OpenCV video, a folder of images.

A source returns BGR uint8 frames of the camera's calibrated size. `read(capture_ns)` returns
None when the source has ended; it raises SourceError when it fails (cannot open, broken
stream). Corrupt single images are skipped and counted, not fatal.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from perception.config import CameraConfig

log = logging.getLogger("perception.camera")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    pass


class FrameSource:
    name = "source"
    #: True when the source renders a given capture time (sim), False when it delivers the
    #: newest frame it has (video, images): decides where the capture stamp comes from.
    timed = False
    skipped = 0

    def read(self, capture_ns: int) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _fit(image: np.ndarray, camera: CameraConfig) -> np.ndarray:
    """Resize to the calibrated size (the calibration describes the image as sent)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[:2] != (camera.height, camera.width):
        image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class SimSource(FrameSource):
    """Renders the built-in world at the capture time: every camera process with the same seed
    sees the same world, because the world is a function of (seed, time) alone."""
    timed = True

    def __init__(self, camera: CameraConfig, seed: int):
        from perception.sim import World

        self.camera = camera
        self.world = World(seed)
        self.name = f"sim:seed={seed}"

    def read(self, capture_ns: int) -> np.ndarray:
        from perception.sim import render

        return render(self.world.scene_at(capture_ns), self.camera)


class VideoSource(FrameSource):
    """OpenCV VideoCapture: a file, a device index ("0"), an RTSP URL or a GStreamer pipeline."""

    def __init__(self, camera: CameraConfig, uri: str, loop: bool = False):
        self.camera, self.uri, self.loop = camera, uri, loop
        self.name = f"video:{uri}"
        self.cap = self._open()

    def _open(self):
        target = int(self.uri) if self.uri.isdigit() else self.uri
        backend = cv2.CAP_GSTREAMER if "!" in self.uri else cv2.CAP_ANY
        cap = cv2.VideoCapture(target, backend)
        if not cap.isOpened():
            raise SourceError(f"cannot open video source {self.uri!r} (missing file, device or codec?)")
        return cap

    def read(self, capture_ns: int) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok and self.loop:
            self.cap.release()
            self.cap = self._open()
            ok, frame = self.cap.read()
        if not ok:
            return None
        return _fit(frame, self.camera)

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource(FrameSource):
    """Images of a folder in name order; corrupt or unreadable files are skipped and counted."""

    def __init__(self, camera: CameraConfig, folder: str, loop: bool = False):
        self.camera, self.loop = camera, loop
        self.name = f"images:{folder}"
        path = Path(folder)
        if not path.is_dir():
            raise SourceError(f"image folder {folder!r} does not exist")
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"image folder {folder!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.index = 0

    def read(self, capture_ns: int) -> np.ndarray | None:
        while True:
            if self.index >= len(self.files):
                if not self.loop or self.skipped >= len(self.files):
                    return None
                self.index = 0
            path = self.files[self.index]
            self.index += 1
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.dtype != np.uint8:
                self.skipped += 1
                log.warning("skipping unreadable image %s (%d skipped)", path, self.skipped)
                continue
            return _fit(image, self.camera)


def open_source(kind: str, camera: CameraConfig, *, uri: str | None = None, seed: int = 0,
                loop: bool = False) -> FrameSource:
    if kind == "sim":
        return SimSource(camera, seed)
    if uri is None:
        raise SourceError(f"source {kind!r} needs --uri")
    if kind == "video":
        return VideoSource(camera, uri, loop)
    if kind == "images":
        return ImageFolderSource(camera, uri, loop)
    raise SourceError(f"unknown source {kind!r}; choose sim, video or images")
