"""Training pieces: the losses, a loss that decreases on a tiny batch, exact resume from a
checkpoint, and the shipped weights finding a known nearby car."""
import numpy as np
import pytest
import torch

from perception.config import DEFAULT_MODEL_DIR, DEFAULT_RIG, load_rig
from perception.dataset import RigRandomization, array_to_boxes, boxes_to_array, render_sample
from perception.model import BEVViT, ModelConfig, encode_targets
from perception.model.config import replace_config
from perception.train import TrainConfig, class_weights, focal_loss, load_checkpoint, regression_loss, save_checkpoint

TINY = replace_config(ModelConfig(), dim=32, heads=2, view_depth=1, bev_depth=1, bev_cells=16, topk=8,
                      stem_width=8, head_hidden=16, geo_hidden=8)


def tiny_batch(n=2, first=10):
    rig = load_rig()
    samples = [render_sample(first + i, rig, TINY, RigRandomization()) for i in range(n)]
    images, kinv, T, boxes = (np.stack(a) for a in zip(*samples))
    targets = [encode_targets(array_to_boxes(b), TINY) for b in boxes]
    heat, reg, mask = (torch.from_numpy(np.stack(a)).float() for a in zip(*targets))
    inputs = (torch.from_numpy(images), torch.from_numpy(kinv), torch.from_numpy(T), torch.ones(n, 6))
    return inputs, heat, reg, mask


def test_focal_loss_prefers_the_right_heatmap():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 3, 4] = 1.0
    good = torch.full_like(target, -6.0)
    good[0, 0, 3, 4] = 6.0
    assert focal_loss(good, target) < 0.01 < focal_loss(torch.zeros_like(target), target)


def test_class_weights_favour_rare_classes_and_keep_the_average_box():
    boxes = np.full((4, 8, 10), -1.0, np.float32)
    boxes[:, :6, 0] = 0                       # 24 boxes of class 0
    boxes[:, 6, 0] = 1                        # 4 of class 1, none of class 2
    assert class_weights(boxes, 3, 0.0) is None
    w = class_weights(boxes, 3, 0.5).double()
    n = torch.tensor([25.0, 5.0, 1.0], dtype=torch.float64)   # counts + 1
    assert w[0] < w[1] < w[2]
    assert w[1] / w[0] == pytest.approx(5 ** 0.5)
    assert (n * w).sum() == pytest.approx(n.sum())
    # per-class weights scale the focal loss channel by channel
    logits, target = torch.randn(2, 3, 6, 6), torch.zeros(2, 3, 6, 6)
    target[0, 1, 2, 2] = 1.0
    per_class = [focal_loss(logits[:, c:c + 1], target[:, c:c + 1]) for c in range(3)]
    expected = sum(wc * lc for wc, lc in zip(w.float(), per_class))  # each normalised by the 1 positive
    assert focal_loss(logits, target, w.float()) == pytest.approx(expected.item(), rel=1e-5)
    assert focal_loss(logits, target, torch.ones(3)) == pytest.approx(focal_loss(logits, target).item(), rel=1e-6)


def test_regression_loss_counts_only_object_centres():
    pred, target, mask = torch.zeros(1, 10, 4, 4), torch.zeros(1, 10, 4, 4), torch.zeros(1, 4, 4)
    pred[0, :, 0, 0] = 5.0                    # wrong, but not at an object
    assert regression_loss(pred, target, mask) == 0
    mask[0, 1, 1] = 1.0
    pred[0, 0, 1, 1] = 2.0
    assert regression_loss(pred, target, mask) == pytest.approx(2.0)


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = BEVViT(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    inputs, heat, reg, mask = tiny_batch()
    losses = []
    for _ in range(25):
        out = model.forward_train(*inputs)
        loss = focal_loss(out["heatmap_logits"], heat) + 0.25 * regression_loss(out["regression"], reg, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_checkpoint_resume_restores_model_and_optimizer_exactly(tmp_path):
    torch.manual_seed(0)
    model = BEVViT(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, heat, _, _ = tiny_batch(1)
    for _ in range(2):
        opt.zero_grad()
        focal_loss(model.forward_train(*inputs)["heatmap_logits"], heat).backward()
        opt.step()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model, opt, 2, TrainConfig(), [[1, 2.0, 3.0]])
    model2 = BEVViT(TINY)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    step, history = load_checkpoint(path, model2, opt2)
    assert step == 2 and history == [[1, 2.0, 3.0]]
    for m, o in ((model, opt), (model2, opt2)):                     # one more identical step each
        o.zero_grad()
        focal_loss(m.forward_train(*inputs)["heatmap_logits"], heat).backward()
        o.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_boxes_outside_the_bev_range_are_not_targets():
    from perception.sim import Box3D

    near = Box3D(0, np.array([5.0, 1.0, 0.8]), np.array([4.5, 1.9, 1.6]), 0.0, np.zeros(2), 1)
    far = Box3D(0, np.array([50.0, 0.0, 0.8]), np.array([4.5, 1.9, 1.6]), 0.0, np.zeros(2), 2)
    arr = boxes_to_array([near, far], ModelConfig())
    assert len(array_to_boxes(arr)) == 1


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(), reason="no shipped weights yet")
def test_shipped_weights_find_a_known_nearby_car():
    """The first scene of the test split (never trained on) has a car 6 m from the ego; the
    shipped model must find it within 1 m."""
    from perception.dataset import TEST_SEED_BASE
    from perception.model import load_model

    model, cfg = load_model(DEFAULT_MODEL_DIR)
    images, kinv, T, boxes = render_sample(TEST_SEED_BASE, load_rig(DEFAULT_RIG), cfg, RigRandomization.none())
    cars = sorted((b for b in array_to_boxes(boxes) if b[0] == 0), key=lambda b: np.hypot(*b[1][:2]))
    nearest = cars[0][1][:2]
    assert np.hypot(*nearest) < 10.0                     # the scene is what this test says it is
    with torch.inference_mode():
        out = model(torch.from_numpy(images[None]), torch.from_numpy(kinv[None]), torch.from_numpy(T[None]),
                    torch.ones(1, 6))
    keep = (out["det_scores"][0] > 0.3) & (out["det_labels"][0] == 0)
    dist = np.hypot(*(out["det_boxes"][0, keep, :2].numpy() - nearest).T)
    closest = dist.min() if len(dist) else None
    assert len(dist) and dist.min() < 1.0, f"nearest car at {nearest}, closest car detection {closest} m away"


def test_recipes_set_defaults_and_explicit_flags_win():
    from perception.commands.train import parse
    from perception.train import RECIPES

    shipped = parse([])
    assert (shipped.scenes, shipped.steps) == (TrainConfig.scenes, TrainConfig.steps)
    quick = parse(["--recipe", "quick"])
    assert (quick.scenes, quick.steps, quick.warmup) == (RECIPES["quick"]["scenes"], RECIPES["quick"]["steps"],
                                                         RECIPES["quick"]["warmup"])
    assert parse(["--recipe", "quick", "--steps", "10"]).steps == 10
