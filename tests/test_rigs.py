"""The any-rig distribution (perception/rigs.py): ranges and validity of seeded rigs, the held-out
partition training never draws from, rigs with fewer cameras masked through the dataset and the
training batch, and `perception eval`'s padding and camera order on a held-out rig."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.config import DEFAULT_MODEL_DIR, REPO_ROOT, ConfigError, load_rig, parse_rig
from perception.dataset import DatasetSpec, RigRandomization, RigSampling, build_dataset, randomize_rig, render_sample, sample_rig
from perception.inputs import camera_inputs
from perception.model import ModelConfig
from perception.model.config import replace_config
from perception.rigs import (
    HELDOUT_MODULUS,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    RigDistribution,
    check_rig,
    heldout_rig,
    is_heldout,
    narrowed,
    rig_fingerprint,
    rig_summary,
    training_rig,
)

HELDOUT_DIR = REPO_ROOT / "rigs" / "heldout"
TINY = replace_config(ModelConfig(), dim=32, heads=2, view_depth=1, bev_depth=1, bev_cells=16, topk=8,
                      stem_width=8, head_hidden=16, geo_hidden=8)


@pytest.fixture(scope="module")
def train_rigs():
    return [training_rig(i) for i in range(200)]


def test_training_rigs_stay_in_the_ranges_and_are_valid(train_rigs):
    for rig in train_rigs:
        check_rig(rig, num_cameras=6, image_size=(128, 72))
        s = rig_summary(rig)
        assert 3 <= s["cameras"] <= 6
        assert 45.0 - 0.06 <= s["hfov_deg"][0] <= s["hfov_deg"][1] <= 120.0 + 0.06
        assert 1.2 <= s["height_m"][0] <= s["height_m"][1] <= 2.8
        assert -0.06 <= s["pitch_deg"][0] <= s["pitch_deg"][1] <= 12.06
        for cam in rig.cameras:
            assert (cam.width, cam.height) == (IMAGE_WIDTH, IMAGE_HEIGHT)
            assert cam.K[0, 0] == pytest.approx(cam.K[1, 1])                 # square pixels, K from the FOV
            assert cam.K[:2, 2] == pytest.approx([(IMAGE_WIDTH - 1) / 2, (IMAGE_HEIGHT - 1) / 2])
        # cameras spread around the vehicle: no gap between neighbouring yaws beyond 1.4 x the even spacing
        yaws = np.sort(np.radians(s["yaw_deg"]))
        gaps = np.diff(np.concatenate([yaws, yaws[:1] + 2 * np.pi]))
        assert gaps.max() <= 1.4 * 2 * np.pi / len(yaws) + 1e-6


def test_the_distribution_covers_counts_bodies_mounts_and_gaps(train_rigs):
    counts = Counter(len(r.cameras) for r in train_rigs)
    assert set(counts) == {3, 4, 5, 6} and min(counts.values()) >= 30
    assert {r.name.split("_")[1] for r in train_rigs} == {"car", "truck"}
    assert {c.name.split("_", 1)[1] for r in train_rigs for c in r.cameras} == {"corner", "edge", "roof", "mirror"}
    # gaps between views: the FOVs of many rigs do not add up to the full circle
    total_fov = [sum(np.degrees(2 * np.arctan(c.width / 2 / c.K[0, 0])) for c in r.cameras) for r in train_rigs[:60]]
    assert sum(f < 360.0 for f in total_fov) >= 10 and sum(f >= 360.0 for f in total_fov) >= 10
    heights = [c.position[2] for r in train_rigs for c in r.cameras]
    assert min(heights) < 1.4 and max(heights) > 2.5


def _cam_dict(cam):
    return {"name": cam.name, "width": cam.width, "height": cam.height, "K": cam.K.tolist(),
            "T_ego_from_camera": cam.T_ego_from_camera.tolist()}


def test_rigs_are_deterministic_per_seed():
    a, b = training_rig(17), training_rig(17)
    assert a.name == b.name and rig_fingerprint(a) == rig_fingerprint(b)
    assert all(np.array_equal(x.T_ego_from_camera, y.T_ego_from_camera) and np.array_equal(x.K, y.K)
               for x, y in zip(a.cameras, b.cameras))
    assert rig_fingerprint(training_rig(18)) != rig_fingerprint(a)
    assert rig_fingerprint(heldout_rig(3, 0)[0]) == rig_fingerprint(heldout_rig(3, 0)[0])
    assert rig_fingerprint(heldout_rig(3, 0)[0]) != rig_fingerprint(heldout_rig(3, 1)[0])


def test_fingerprint_ignores_camera_names_and_order():
    rig = training_rig(5)
    cams = [_cam_dict(c) for c in rig.cameras][::-1]
    for i, c in enumerate(cams):
        c["name"] = f"other{i}"
    assert rig_fingerprint(parse_rig({"cameras": cams})) == rig_fingerprint(rig)


def test_heldout_rigs_are_never_produced_by_the_training_stream(train_rigs):
    assert not any(is_heldout(r) for r in train_rigs)
    held = [heldout_rig(0, i)[0] for i in range(10)]
    assert all(is_heldout(r) for r in held)
    train_prints = {rig_fingerprint(r) for r in train_rigs}
    assert not train_prints & {rig_fingerprint(r) for r in held}
    # the partition is a fixed share of the distribution, not an empty or a full set
    assert 1 < HELDOUT_MODULUS < 100


def test_committed_heldout_rigs_are_held_out_valid_and_unlike_the_nominal_rig():
    files = sorted(HELDOUT_DIR.glob("*.yaml"))
    assert len(files) >= 4
    nominal = load_rig()
    counts = set()
    for f in files:
        rig = load_rig(f)
        check_rig(rig)
        assert is_heldout(rig), f
        assert rig_fingerprint(rig) != rig_fingerprint(nominal)
        counts.add(len(rig.cameras))
    assert counts == {3, 4, 5, 6}


def test_narrowed_distributions_and_contradictions():
    dist = narrowed(RigDistribution(), cameras=(3, 3), hfov_deg=(45.0, 50.0), height_m=(2.4, 2.8))
    rig, d = heldout_rig(0, 0, dist, "x")
    s = rig_summary(rig)
    assert s["cameras"] == 3 and 44.9 <= s["hfov_deg"][0] <= s["hfov_deg"][1] <= 50.1
    assert s["height_m"][0] >= 2.4 and rig.name.startswith("x_truck")   # no car mount reaches 2.4 m
    with pytest.raises(ConfigError):
        heldout_rig(0, 0, narrowed(RigDistribution(), bodies=("car",), height_m=(2.5, 2.8)))
    with pytest.raises(ConfigError):
        RigDistribution(cameras=(4, 3))


def test_check_rig_refuses_what_the_model_cannot_use():
    rig = training_rig(0)
    with pytest.raises(ConfigError, match="slots"):
        check_rig(rig, num_cameras=len(rig.cameras) - 1)
    cams = [_cam_dict(c) for c in rig.cameras]
    cams[0]["width"] = 320
    cams[0]["height"] = 240
    cams[0]["K"][1][2] = 119.5
    with pytest.raises(ConfigError, match="aspect"):
        check_rig(parse_rig({"cameras": cams}))
    cams = [_cam_dict(c) for c in rig.cameras]
    cams[0]["T_ego_from_camera"][0][3] = 9.0                            # 9 m ahead: outside the ego keep-out
    with pytest.raises(ConfigError, match="footprint"):
        check_rig(parse_rig({"cameras": cams}))


def test_nominal_sampling_is_the_old_jitter_and_any_keeps_the_nominal_share():
    nominal = load_rig()
    r = RigRandomization()
    for sid in (0, 1, 2):
        old = randomize_rig(nominal, np.random.default_rng(sid), r)
        for sampling in (None, RigSampling()):
            new = sample_rig(sid, nominal, np.random.default_rng(sid), r, sampling)
            assert all(np.array_equal(a.T_ego_from_camera, b.T_ego_from_camera) for a, b in zip(old.cameras, new.cameras))
    picks = [sample_rig(i, nominal, np.random.default_rng(i), r, RigSampling("any", 0.3)).name == nominal.name
             for i in range(300)]
    assert 0.2 < np.mean(picks) < 0.4
    assert not any(sample_rig(i, nominal, np.random.default_rng(i), r, RigSampling("any", 0.0)).name == nominal.name
                   for i in range(20))
    with pytest.raises(ValueError):
        RigSampling("most")


@pytest.mark.slow
def test_fewer_cameras_are_masked_through_the_dataset_and_the_batch(tmp_path):
    from perception.train import make_batch

    spec = DatasetSpec(0, 4, str(REPO_ROOT / "rigs" / "nuscenes_6cam.yaml"), TINY.image_width, TINY.image_height,
                       (TINY.bev_x_range, TINY.bev_y_range, TINY.bev_cells), RigRandomization(), RigSampling("any", 0.0))
    nominal_spec = DatasetSpec(*[getattr(spec, f) for f in ("split_seed", "size", "rig_path", "image_width",
                                                            "image_height", "bev", "randomization")])
    assert spec.key() != nominal_spec.key()
    data = build_dataset(spec, TINY, workers=1, cache_dir=tmp_path, progress=False)
    assert data.images.shape[1] == data.camera_mask.shape[1] == TINY.num_cameras == 6
    for i in range(4):
        rig = training_rig(i)
        n = len(rig.cameras)
        assert data.camera_mask[i].tolist() == [1.0] * n + [0.0] * (6 - n)
        for j, cam in enumerate(rig.cameras):                        # the rig's cameras, in the rig's order
            k_inv, T = camera_inputs(cam, TINY.image_width, TINY.image_height)
            np.testing.assert_allclose(data.intrinsics_inv[i, j], k_inv, rtol=1e-6)
            np.testing.assert_allclose(data.ego_from_camera[i, j], T, rtol=1e-6)
        assert not data.images[i, n:].any()
        np.testing.assert_array_equal(data.intrinsics_inv[i, n:], np.broadcast_to(np.eye(3), (6 - n, 3, 3)))
        np.testing.assert_array_equal(data.ego_from_camera[i, n:], np.broadcast_to(np.eye(4), (6 - n, 4, 4)))
        images, kinv, T, boxes = render_sample(i, load_rig(), TINY, RigRandomization(), RigSampling("any", 0.0))
        np.testing.assert_array_equal(images, data.images[i, :n])
        np.testing.assert_array_equal(boxes, data.boxes[i])
    assert (data.camera_mask.sum(1) < 6).any()

    # the batch: a dropped camera is always one of the rig's own and one camera stays
    idx = np.arange(4)
    for seed in range(5):
        inputs, (_, _, _, depth) = make_batch(data, idx, TINY, np.random.default_rng(seed), dropout=1.0)
        mask = inputs[3].numpy()
        assert (mask <= data.camera_mask[idx]).all()
        assert ((data.camera_mask[idx] - mask).sum(1) == 1).all()           # exactly one of the present dropped
        # no token-depth label on a masked slot
        assert not depth.reshape(4, 6, -1)[torch.from_numpy(mask) == 0].any()

    # a model sees nothing of the empty slots: their pixels and calibration do not change its output
    from perception.model import BEVViT

    torch.manual_seed(0)
    model = BEVViT(TINY).eval()
    inputs, _ = make_batch(data, idx, TINY, np.random.default_rng(0), dropout=0.0)
    images, kinv, T, mask = (x.clone() for x in inputs)
    with torch.no_grad():
        ref = model.forward_train(images, kinv, T, mask)["heatmap_logits"]
        empty = mask == 0
        images[empty] = torch.randint(0, 256, images[empty].shape, dtype=torch.uint8)
        T[empty] = torch.from_numpy(training_rig(99).cameras[0].T_ego_from_camera).float()
        other = model.forward_train(images, kinv, T, mask)["heatmap_logits"]
    torch.testing.assert_close(ref, other)


@pytest.mark.slow
def test_eval_pads_a_heldout_rig_and_does_not_depend_on_camera_order():
    from perception.evaluate import pad_to_model
    from perception.model.config import load_model_config
    from perception.runtime import create_engine

    cfg = load_model_config(Path(DEFAULT_MODEL_DIR) / "config.yaml")
    engine = create_engine("torch", DEFAULT_MODEL_DIR, threads=1)
    rig = load_rig(HELDOUT_DIR / "narrow_car_3cam.yaml")
    reversed_rig = parse_rig({"name": "r", "cameras": [_cam_dict(c) for c in rig.cameras[::-1]]})
    outs = []
    for r in (rig, reversed_rig):
        images, kinv, T, boxes = render_sample(4_000_000_000, r, cfg, RigRandomization.none())
        inputs = pad_to_model({"images": images[None], "intrinsics_inv": kinv[None], "ego_from_camera": T[None],
                               "camera_mask": np.ones((1, 3), np.float32)}, cfg.num_cameras)
        assert inputs["camera_mask"].tolist() == [[1, 1, 1, 0, 0, 0]]
        assert inputs["images"].shape[1] == 6 and not inputs["images"][0, 3:].any()
        outs.append((engine.infer(inputs), boxes))
    (a, boxes_a), (b, boxes_b) = outs
    np.testing.assert_array_equal(boxes_a, boxes_b)                      # the truth does not depend on the order
    keep_a, keep_b = a["det_scores"][0] > 0.3, b["det_scores"][0] > 0.3
    assert keep_a.sum() == keep_b.sum() > 0
    sa = a["det_boxes"][0][keep_a]
    sb = b["det_boxes"][0][keep_b]
    np.testing.assert_allclose(sa[np.lexsort(sa[:, :2].T)], sb[np.lexsort(sb[:, :2].T)], atol=1e-3)
