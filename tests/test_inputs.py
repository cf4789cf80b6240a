"""One model-input contract: a frame set prepared for training (dataset.render_sample) and the
same frames prepared for serving (fusion.pipeline.Preprocessor, what the live node and replay
use) give identical tensors."""
import numpy as np

from perception.config import load_rig
from perception.inputs import INPUT_NAMES, OUTPUT_NAMES, calibration_inputs


def test_training_and_serving_prepare_identical_inputs():
    from perception.dataset import RigRandomization, _world, render_sample, sample_instant
    from perception.fusion.pipeline import Preprocessor
    from perception.model.config import ModelConfig
    from perception.sim import render

    cfg, rig, sample_id = ModelConfig(), load_rig(), 5
    images, k_inv, t, _ = render_sample(sample_id, rig, cfg, RigRandomization.none())

    world_seed, _, t_ns = sample_instant(sample_id)
    scene = _world(world_seed).scene_at(t_ns)
    frames = {cam.name: render(scene, cam) for cam in rig.cameras}          # what the sim cameras send
    assert next(iter(frames.values())).shape[:2] == (rig.cameras[0].height, rig.cameras[0].width)
    served = Preprocessor(rig, cfg.image_width, cfg.image_height)(frames)

    np.testing.assert_array_equal(served["images"][0], images)
    np.testing.assert_array_equal(served["intrinsics_inv"][0], k_inv)
    np.testing.assert_array_equal(served["ego_from_camera"][0], t)
    np.testing.assert_array_equal(served["camera_mask"][0], np.ones(len(rig.cameras), np.float32))
    # and the benchmark's/exporter's calibration is the same function's
    k2, t2 = calibration_inputs(rig, cfg)
    np.testing.assert_array_equal(k2, k_inv)
    np.testing.assert_array_equal(t2, t)


def test_the_names_are_defined_once():
    from perception.runtime import base

    assert base.INPUT_NAMES is INPUT_NAMES and base.OUTPUT_NAMES is OUTPUT_NAMES
