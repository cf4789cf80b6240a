"""Camera sources: images (with a corrupt file), video, sim; clear errors for bad sources."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from perception.cameras.sources import SourceError, open_source
from perception.config import load_rig

CAM = load_rig().camera("front")


def test_image_folder_skips_corrupt_files_and_fits_the_calibrated_size(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((90, 160, 3), 50, np.uint8))
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(tmp_path / "c.jpg"), np.full((180, 320), 200, np.uint8))     # grey: becomes BGR
    src = open_source("images", CAM, uri=str(tmp_path))
    a, c = src.read(0), src.read(0)
    assert a.shape == c.shape == (CAM.height, CAM.width, 3) and a.dtype == np.uint8
    assert src.skipped == 1
    assert src.read(0) is None                                   # ended, no loop


def test_image_folder_loops_when_asked(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((180, 320, 3), np.uint8))
    src = open_source("images", CAM, uri=str(tmp_path), loop=True)
    assert all(src.read(0) is not None for _ in range(5))


def test_video_file_source_reads_and_ends(tmp_path):
    path = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 90))
    if not w.isOpened():
        pytest.skip("this OpenCV build has no MJPG writer")
    for k in range(3):
        w.write(np.full((90, 160, 3), 60 * k, np.uint8))
    w.release()
    src = open_source("video", CAM, uri=path)
    frames = [src.read(0) for _ in range(4)]
    assert all(f.shape == (180, 320, 3) for f in frames[:3]) and frames[3] is None


@pytest.mark.parametrize("kind, uri, message", [("images", "/nonexistent/dir", "does not exist"),
                                                ("video", "/nonexistent/clip.mp4", "cannot open"),
                                                ("video", None, "needs --uri")])
def test_bad_sources_give_clear_errors(kind, uri, message):
    with pytest.raises(SourceError, match=message):
        open_source(kind, CAM, uri=uri)


def test_sim_source_renders_the_calibrated_size():
    img = open_source("sim", CAM, seed=1).read(1_700_000_000_000_000_000)
    assert img.shape == (180, 320, 3) and img.dtype == np.uint8 and img.std() > 5


def test_camera_process_reports_a_bad_source_and_exits_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "perception.cli", "camera", "--name", "front", "--source", "images",
                        "--uri", str(tmp_path / "missing"), "--endpoint", f"ipc://{tmp_path}/cam"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_camera_process_unknown_camera_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "perception.cli", "camera", "--name", "roof", "--endpoint",
                        f"ipc://{tmp_path}/cam"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "has no camera 'roof'" in r.stderr
