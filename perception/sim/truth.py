"""Ground truth of the simulated world: which objects a camera could see, and the protobuf
message (topic sim/truth).

An object counts as ground truth only when enough of it is visible: nuScenes scores only boxes
with at least one lidar or radar point, and a camera-only detector cannot find a pedestrian
hidden behind a parked van. Here "visible" is measured directly: each camera renders a
box-index image at VISIBILITY_WIDTH pixels across (occlusion by every other solid included), and
an object needs MIN_VISIBLE_PX pixels in the camera that sees most of it. 4 pixels at 160x90 is
about 2.5 pixels of the 128x72 model input: lenient, like one lidar point. Training targets,
`perception eval` and the live online score all use this one definition.
"""
from __future__ import annotations

import numpy as np

VISIBILITY_WIDTH = 160        # pixels across of the box-index renders (a quarter of the pixels of 320x180)
from perception.boxes import MIN_VISIBLE_PX  # noqa: E402,F401  (defined with the taxonomy)


def visible_pixels(scene, rig) -> np.ndarray:
    """int64 (len(scene.boxes),): each box's visible pixels in the camera that sees most of it."""
    from perception.sim.render import visible_pixels as in_camera

    if not scene.boxes:
        return np.zeros(0, np.int64)
    counts = [in_camera(scene, cam.resized(VISIBILITY_WIDTH, max(1, round(cam.height * VISIBILITY_WIDTH / cam.width))))
              for cam in rig.cameras]
    return np.max(counts, axis=0)


def ground_truth_message(world, stamp_ns: int, seed: int, rig):
    """Every target box at stamp_ns with its visible pixels in `rig` (consumers filter with
    MIN_VISIBLE_PX)."""
    from perception.boxes import object_from_truth
    from perception.v1 import detections_pb2

    scene = world.scene_at(stamp_ns)
    visible = visible_pixels(scene, rig)
    return detections_pb2.GroundTruth(stamp_ns=stamp_ns, world_seed=seed,
                                      objects=[object_from_truth(b, visible=v) for b, v in zip(scene.boxes, visible)])
