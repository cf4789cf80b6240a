"""Token depth (perception/model/depth.py): ray-box labels, the pair log-likelihood the cross
attention adds, its loss, and the config rule that it needs positional geometry."""
import math

import numpy as np
import pytest
import torch

from perception.config import ConfigError, load_rig
from perception.model import BEVViT, ModelConfig
from perception.model.config import replace_config
from perception.model.depth import depth_log_likelihood, laplace_nll, token_depth_targets
from perception.model.embed import camera_rays, patch_centre_pixels

CFG = ModelConfig(token_depth=True)


def rig_inputs(cfg=CFG):
    rig = load_rig()
    kinv = np.stack([np.linalg.inv(c.resized(cfg.image_width, cfg.image_height).K) for c in rig.cameras])
    T = np.stack([c.T_ego_from_camera for c in rig.cameras])
    front = int(np.argmax([c.T_ego_from_camera[0, 2] for c in rig.cameras]))   # optical axis along +x
    return torch.from_numpy(kinv).float()[None], torch.from_numpy(T).float()[None], front


def one_box(x, y, cls=0, size=(4.5, 1.9, 1.6), yaw=0.0):
    boxes = torch.full((1, 64, 10), -1.0)
    boxes[0, 0] = torch.tensor([cls, x, y, size[2] / 2, *size, yaw, 0.0, 0.0])
    return boxes


def test_tokens_that_see_a_box_are_labelled_with_its_distance():
    kinv, T, front = rig_inputs()
    target = token_depth_targets(one_box(12.0, 0.0), kinv, T, torch.ones(1, 6), CFG)    # [1, N*T]
    per_cam = target.reshape(6, CFG.tokens_per_view)
    cam = T[0, front, :3, 3]
    expected = float(torch.linalg.norm(torch.tensor([12.0, 0.0, CFG.bev_query_height]) - cam))
    labelled = per_cam[front][per_cam[front] > 0]
    assert len(labelled) >= 2, "a car 12 m ahead covers several 8x8 patches of the front view"
    assert torch.allclose(labelled, torch.full_like(labelled, expected))
    # the labelled tokens are the ones whose centre ray points at the car (not the sky above it)
    rays, _ = camera_rays(patch_centre_pixels(CFG), kinv, T)
    hit_rays = rays[0, front][per_cam[front] > 0]
    assert (hit_rays[:, 0] > 0.95).all()
    # the rear camera sees nothing of it; nothing is labelled where no box is
    assert (per_cam.sum(dim=1) > 0).sum() <= 3
    assert (token_depth_targets(torch.full((1, 64, 10), -1.0), kinv, T, torch.ones(1, 6), CFG) == 0).all()


def test_nearest_box_wins_and_missing_cameras_are_unlabelled():
    kinv, T, front = rig_inputs()
    boxes = one_box(20.0, 0.0, size=(4.5, 1.9, 1.6))
    boxes[0, 1] = torch.tensor([1, 35.0, 3.0, 1.5, 8.0, 2.5, 3.0, 0.0, 0.0, 0.0])   # a truck behind, to one side
    target = token_depth_targets(boxes, kinv, T, torch.ones(1, 6), CFG).reshape(6, -1)[front]
    cam = T[0, front, :3, 3]
    near = torch.linalg.norm(torch.tensor([20.0, 0.0, CFG.bev_query_height]) - cam)
    far = torch.linalg.norm(torch.tensor([35.0, 3.0, CFG.bev_query_height]) - cam)
    values = target[target > 0]
    is_near, is_far = torch.isclose(values, near), torch.isclose(values, far)
    assert is_near.any() and is_far.any() and (is_near | is_far).all()
    mask = torch.ones(1, 6)
    mask[0, front] = 0
    assert (token_depth_targets(boxes, kinv, T, mask, CFG).reshape(6, -1)[front] == 0).all()


def test_pair_likelihood_peaks_where_the_cell_distance_matches_the_token():
    token_depth = torch.tensor([[[math.log(10.0), -1.0], [math.log(30.0), -1.0]]])   # [1, S=2, 2]
    index = torch.tensor([[[0, 1]]]).expand(1, 3, 2)                                  # 3 cells, both keys
    distance = torch.tensor([[[10.0] * 2, [20.0] * 2, [30.0] * 2]])                   # [1, Q=3, K=2]
    ll = depth_log_likelihood(token_depth, index, distance)[0]                        # [Q, K]
    assert ll[0, 0] > ll[0, 1] and ll[2, 1] > ll[2, 0]     # the 10 m cell prefers the 10 m token
    assert ll[0, 0] == pytest.approx(1.0)                  # -|0| * e^1 - (-1)
    # a confident token is worth more where it agrees, less where it does not
    sure = torch.tensor([[[math.log(10.0), -3.0]]])
    one = torch.zeros(1, 1, 1, dtype=torch.long)
    assert depth_log_likelihood(sure, one, torch.tensor([[[10.0]]])) > depth_log_likelihood(
        token_depth[:, :1], one, torch.tensor([[[10.0]]]))
    assert depth_log_likelihood(sure, one, torch.tensor([[[20.0]]])) < depth_log_likelihood(
        token_depth[:, :1], one, torch.tensor([[[20.0]]]))


def test_laplace_loss_counts_labelled_tokens_only_and_prefers_the_truth():
    target = torch.tensor([[10.0, 0.0]])
    right = torch.tensor([[[math.log(10.0), -2.0], [0.0, 5.0]]])
    wrong = torch.tensor([[[math.log(20.0), -2.0], [0.0, 5.0]]])
    assert laplace_nll(right, target) == pytest.approx(-2.0)
    assert laplace_nll(wrong, target) > laplace_nll(right, target)
    unlabelled = laplace_nll(right.requires_grad_(), torch.zeros(1, 2))
    assert unlabelled == 0 and unlabelled.requires_grad


def test_model_with_token_depth_trains_its_depth_head():
    cfg = replace_config(CFG, dim=32, heads=2, view_depth=1, bev_depth=1, bev_cells=16, topk=8,
                         stem_width=8, head_hidden=16, geo_hidden=8)
    torch.manual_seed(0)
    model = BEVViT(cfg)
    from perception.inputs import example_inputs

    inputs = example_inputs(cfg, 1, 0)
    out = model.forward_train(*inputs)
    assert out["token_depth"].shape == (1, 6 * cfg.tokens_per_view, 2)
    out["heatmap_logits"].sum().backward()        # the detection loss alone reaches the depth head
    assert model.token_depth.proj.weight.grad.abs().sum() > 0
    assert model.cross.attn.depth_weight.grad.abs().sum() > 0


def test_token_depth_needs_positional_geometry():
    with pytest.raises(ConfigError, match="token_depth needs use_position_embedding"):
        ModelConfig(token_depth=True, use_position_embedding=False)


def test_models_saved_before_token_depth_still_load_as_they_were():
    from perception.model.config import model_config_from_dict, model_config_to_dict

    saved = model_config_to_dict(ModelConfig())
    del saved["token_depth"]                          # a config.yaml written before the field existed
    assert model_config_from_dict(saved).token_depth is False
    assert model_config_from_dict({"heads": 2}).token_depth is True   # a partial override file: defaults
