"""`perception train`: train the BEV ViT on the simulated world. Read it top to bottom.

    perception train                                  # the shipped model (engines/bev_vit; time: README)
    perception train --recipe quick --out runs/q      # ~30 min, for experiments
    perception train --steps 200 --out runs/smoke     # a smoke run
    perception train --out runs/x --resume            # continue an interrupted run

1. Render the training scenes once into a cache (deterministic from the seed range).
2. Loop: draw a batch, augment it (exposure, blur, noise, a dropped camera), forward,
   CenterPoint loss (focal heatmap + L1 box regression) + token-depth Laplace NLL (labels from
   ray-box intersections, model/depth.py), AdamW step with warm-up + cosine LR.
3. Every --checkpoint-every steps save model + optimizer state (safetensors + JSON; no pickle),
   so `--resume` continues bit-for-bit where the run stopped.
4. At the end write the model directory (config.yaml + model.safetensors) and a loss plot.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from perception import config as pcfg

log = logging.getLogger("perception.train")


@dataclass
class TrainConfig:
    out: str = str(pcfg.DEFAULT_MODEL_DIR)
    rig: str = str(pcfg.DEFAULT_RIG)
    seed: int = 0
    # The shipped model (README: how long it took): 16000 scenes, each on its own rig (70 % from
    # perception.rigs, 30 % the nominal rig jittered), 13000 steps of batch 2. Batch 2 because on a
    # CPU a step costs about its samples, and at equal compute more, noisier updates learned faster
    # than batch 4 or 8 (docs/measurements/batch_ab_equal_time.md).
    scenes: int = 16000              # rendered training scenes (world seeds 0 .. scenes-1)
    steps: int = 13000
    batch: int = 2
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup: int = 1600               # steps (3200 samples)
    weight_decay: float = 0.02
    grad_clip: float = 1.0
    reg_weight: float = 0.25         # CenterPoint's weight of the box regression loss
    offset_weight: float = 2.0       # weight of the sub-cell centre offset (dx, dy) inside the box loss
    depth_weight: float = 0.2        # token-depth Laplace NLL (models with token_depth; depth.py)
    subcell_heatmap: bool = False    # heatmap Gaussians centred on the true sub-cell position (decode.encode_targets)
    class_balance: float = 0.0       # heatmap loss weight of class c ~ (its share of training boxes)^-class_balance
    camera_dropout: float = 0.15     # probability a sample loses one random camera (of those present, if 2+)
    # "any": per sample a rig of perception.rigs (3-6 cameras, FOV 45-120 deg, 1.2-2.8 m, pitch 0-12 deg,
    # car or truck body), except --nominal-share of the samples kept on the jittered --rig (docs/any_rig.md).
    # "nominal": every sample on --rig jittered (dataset.RigRandomization; the recipe before any-rig).
    rig_distribution: str = "any"
    nominal_share: float = 0.3
    bf16: bool = False               # bf16 autocast: measured no faster here (memory-bound step), kept as an option
    threads: int = 2
    workers: int = 2                 # scene-rendering processes
    checkpoint_every: int = 500
    log_every: int = 50


# Named starting points of `perception train --recipe NAME`; flags given explicitly still win.
RECIPES: dict[str, dict] = {
    "shipped": {},                                          # the TrainConfig defaults above
    "quick": {"scenes": 4000, "steps": 3800, "warmup": 400},   # under 30 min here, for experiments (README)
}


# Regression channels: dx, dy, z, log l, log w, log h, sin, cos, vx, vy. Velocity is
# down-weighted as in CenterPoint; it is learned from single frames only through appearance
# and lane context, so it is the least learnable quantity here.
REG_WEIGHTS = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0.2, 0.2])


def focal_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (target peaks are exactly 1), from logits:
    log-sigmoid keeps it finite where a clamped sigmoid would saturate. logits, target
    [B, C, Hb, Wb]; class_weights [C] scales each class's channel (None: all 1)."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    pos = target.eq(1).float()
    neg_weight = (1 - target) ** 4
    pos_loss = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * p ** 2 * neg_weight * (1 - pos)
    per_class = (pos_loss + neg_loss).sum(dim=(0, 2, 3))                   # [C]
    if class_weights is not None:
        per_class = per_class * class_weights
    return -per_class.sum() / pos.sum().clamp(min=1)


def class_weights(boxes: np.ndarray, num_classes: int, exponent: float) -> torch.Tensor | None:
    """Heatmap loss weights w_c ~ n_c^-exponent from the training boxes [S, MAX_OBJECTS, 10]
    (cls -1 = padding), scaled so that sum_c n_c w_c = sum_c n_c: the loss of an average box is
    unchanged, rare classes (the small ones here) weigh more. exponent 0 -> None (plain loss)."""
    if exponent == 0:
        return None
    cls = boxes[..., 0].reshape(-1)
    n = np.bincount(cls[cls >= 0].astype(np.int64), minlength=num_classes).astype(np.float64) + 1.0
    w = n ** -exponent
    return torch.tensor(w * n.sum() / (n * w).sum(), dtype=torch.float32)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    offset_weight: float = 1.0) -> torch.Tensor:
    """L1 at object centres only. pred/target [B, 10, Hb, Wb], mask [B, Hb, Wb]."""
    m = mask.unsqueeze(1)
    w = REG_WEIGHTS.clone()
    w[:2] *= offset_weight
    err = (pred.float() - target).abs() * m * w.view(1, -1, 1, 1)
    return err.sum() / mask.sum().clamp(min=1)


def augment(images: np.ndarray, mask: np.ndarray, rng: np.random.Generator, dropout: float) -> None:
    """In place, per present camera image: exposure gain, blur, sensor noise; sometimes drop a
    camera. images [B, N, H, W, 3] uint8, mask [B, N] float32 (1 present, 0 a slot left empty)."""
    B, N = images.shape[:2]
    for b in range(B):
        for n in range(N):
            if mask[b, n] == 0:
                continue                     # a slot beyond the sample's rig: masked, its pixels never matter
            img = images[b, n].astype(np.float32) * rng.uniform(0.65, 1.35)
            sigma = rng.uniform(0.0, 1.0)
            if sigma > 0.4:
                img = cv2.GaussianBlur(img, (0, 0), sigma)
            img += rng.normal(0.0, rng.uniform(0.0, 5.0), img.shape).astype(np.float32)
            images[b, n] = np.clip(img, 0, 255).astype(np.uint8)
        present = np.flatnonzero(mask[b] > 0)
        if rng.random() < dropout and len(present) >= 2:
            # the same draw as before rigs could have fewer cameras than slots
            n = rng.integers(N) if len(present) == N else present[rng.integers(len(present))]
            mask[b, n] = 0.0
            images[b, n] = rng.integers(0, 256, images[b, n].shape, dtype=np.uint8)   # must not matter


def make_batch(data, idx: np.ndarray, model_cfg, rng: np.random.Generator, dropout: float,
               subcell: bool = False):
    from perception.dataset import array_to_boxes
    from perception.model.decode import encode_targets

    images = np.ascontiguousarray(data.images[idx])                    # copies out of the memmap
    mask = np.array(data.camera_mask[idx], np.float32)                 # 0: a slot beyond the sample's rig
    augment(images, mask, rng, dropout)
    heat, reg, reg_mask = zip(*(encode_targets(array_to_boxes(data.boxes[i]), model_cfg, subcell=subcell)
                                 for i in idx))
    t = lambda a: torch.as_tensor(np.stack(a) if isinstance(a, tuple) else a)
    inputs = (torch.from_numpy(images), torch.from_numpy(data.intrinsics_inv[idx]),
              torch.from_numpy(data.ego_from_camera[idx]), torch.from_numpy(mask))
    depth = None
    if model_cfg.token_depth:
        from perception.model.depth import token_depth_targets

        depth = token_depth_targets(torch.from_numpy(data.boxes[idx]), *inputs[1:], model_cfg)  # [B, N*T]
    return inputs, (t(heat).float(), t(reg).float(), t(reg_mask).float(), depth)


def lr_at(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# -- checkpoints: safetensors for tensors, JSON for the rest (loading never unpickles) ------
def save_checkpoint(path: Path, model, opt, step: int, tc: TrainConfig, history: list) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{j}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"step": step, "train": asdict(tc), "history": history}))


def load_checkpoint(path: Path, model, opt) -> tuple[int, list]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            state = {k.split(".", 3)[3]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.{j}.")}
            if state:
                opt.state[p] = state
    meta = json.loads(path.with_suffix(".json").read_text())
    return meta["step"], meta["history"]


def train(tc: TrainConfig, model_cfg, resume: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    from perception.dataset import TRAIN_SEED_BASE, DatasetSpec, RigRandomization, RigSampling, build_dataset
    from perception.model import BEVViT
    from perception.model.cpu_tuning import tune_cpu_allocator
    from perception.model.depth import laplace_nll
    from perception.model.weights import count_parameters, save_model

    tune_cpu_allocator()              # keeps big freed activations mapped: ~1.5x faster steps here
    # Adam's second moments and late-training gradients underflow into denormal floats, which
    # x86 handles in microcode at ~100x the cost: flushing them to zero changes no result
    # that matters and kept the step time from doubling after a few hundred steps.
    torch.set_flush_denormal(True)
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints" / "last.safetensors"
    ckpt.parent.mkdir(exist_ok=True)

    # 1. data
    t_start = time.time()
    spec = DatasetSpec(TRAIN_SEED_BASE, tc.scenes, tc.rig, model_cfg.image_width, model_cfg.image_height,
                       (model_cfg.bev_x_range, model_cfg.bev_y_range, model_cfg.bev_cells), RigRandomization(),
                       RigSampling(tc.rig_distribution, tc.nominal_share))
    data = build_dataset(spec, model_cfg, workers=tc.workers, progress=progress)
    t_data = time.time() - t_start

    weights = class_weights(data.boxes, model_cfg.num_classes, tc.class_balance)
    if weights is not None:
        log.info("heatmap class weights: %s", {c: round(float(w), 2) for c, w in zip(model_cfg.classes, weights)})

    # 2. model and optimizer
    model = BEVViT(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.99),
                            foreach=True)
    step, history = 0, []
    if resume and ckpt.exists():
        step, history = load_checkpoint(ckpt, model, opt)
        log.info("resumed from %s at step %d", ckpt, step)
    log.info("model %s: %.2f M parameters; %d scenes; %d steps of batch %d", model_cfg.name,
             count_parameters(model) / 1e6, len(data), tc.steps, tc.batch)

    # 3. loop: the data order and augmentation are functions of (seed, step), so resuming is exact
    model.train()
    steps_per_epoch = len(data) // tc.batch
    bar = tqdm(total=tc.steps, initial=step, desc="training", unit="step", disable=not progress)
    t_loop = time.time()
    while step < tc.steps:
        epoch, k = divmod(step, steps_per_epoch)
        order = np.random.default_rng([tc.seed, epoch]).permutation(len(data))
        idx = np.sort(order[k * tc.batch:(k + 1) * tc.batch])
        rng = np.random.default_rng([tc.seed, 1, step])
        inputs, (heat_t, reg_t, mask_t, depth_t) = make_batch(data, idx, model_cfg, rng, tc.camera_dropout,
                                                                tc.subcell_heatmap)

        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16):
            out_maps = model.forward_train(*inputs)
        l_heat = focal_loss(out_maps["heatmap_logits"], heat_t, weights)
        l_reg = regression_loss(out_maps["regression"], reg_t, mask_t, tc.offset_weight)
        loss = l_heat + tc.reg_weight * l_reg
        if depth_t is not None:
            loss = loss + tc.depth_weight * laplace_nll(out_maps["token_depth"].float(), depth_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1

        history.append([step, l_heat.item(), l_reg.item()])
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(heat=f"{np.mean([h[1] for h in history[-50:]]):.3f}",
                            reg=f"{np.mean([h[2] for h in history[-50:]]):.3f}", lr=f"{lr_at(step, tc):.1e}")
        if step % tc.log_every == 0 and not progress:
            log.info("step %d  heat %.3f  reg %.3f", step, np.mean([h[1] for h in history[-50:]]),
                     np.mean([h[2] for h in history[-50:]]))
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            save_checkpoint(ckpt, model, opt, step, tc, history)
    bar.close()
    t_train = time.time() - t_loop

    # 4. the model directory
    model.eval()
    save_model(model, model_cfg, out)
    summary = {"data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
               "total_seconds": round(time.time() - t_start, 1), "steps": tc.steps, "batch": tc.batch,
               "scenes": tc.scenes, "parameters": count_parameters(model), "train_config": asdict(tc),
               "final_heat_loss": float(np.mean([h[1] for h in history[-100:]])),
               "final_reg_loss": float(np.mean([h[2] for h in history[-100:]]))}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1))
    plot_history(history, out / "train_loss.png")
    log.info("trained in %.1f min (data %.1f min): %s", summary["total_seconds"] / 60, t_data / 60, out)
    return summary


def plot_history(history: list, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    h = np.array(history)
    if len(h) < 2:
        return
    w = max(1, len(h) // 100)
    smooth = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(h[w - 1:, 0], smooth(h[:, 1]), label="heatmap focal loss")
    ax.plot(h[w - 1:, 0], smooth(h[:, 2]), label="box L1 loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
