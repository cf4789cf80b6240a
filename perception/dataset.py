"""Training and evaluation data from the built-in simulated world.

A sample is one frame set of the rig at one instant of one world: the camera images resized
to the model input exactly as the fusion node does it, the calibration inputs, and the
ground-truth boxes. Everything is a function of (split seed, index), so a run is
reproducible and the training and test splits can never overlap (disjoint world-seed ranges).

Samples are rendered once into a cache (a folder of .npy files, memory-mapped) by a pool of
worker processes; augmentation that varies per epoch (exposure, blur, noise, camera dropout)
is applied when batches are drawn.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.config import REPO_ROOT, RigConfig, load_rig
from perception.model.config import ModelConfig

log = logging.getLogger("perception.dataset")

TRAIN_SEED_BASE = 0                  # train samples [0, 4e9): worlds [0, 1e9)
TEST_SEED_BASE = 4_000_000_000       # test samples [4e9, ...): worlds from 1e9 on, never used for training
MAX_OBJECTS = 64                     # boxes stored per sample (padded)
BOX_FIELDS = 10                      # cls, x, y, z, l, w, h, yaw, vx, vy
CACHE_DIR = REPO_ROOT / ".cache" / "dataset"


@dataclass(frozen=True)
class RigRandomization:
    """How much the rig of a training sample may differ from the nominal rig. Mounting
    tolerance is small; the larger yaw/height/FOV ranges make the model read calibration
    instead of memorising one rig."""
    yaw_deg: float = 8.0
    pitch_deg: float = 2.0
    roll_deg: float = 1.0
    translation_m: float = 0.15
    height_m: float = 0.25
    hfov_scale: float = 0.1          # focal length scaled by 1 +- this

    @classmethod
    def none(cls) -> "RigRandomization":
        return cls(0, 0, 0, 0, 0, 0)


def randomize_rig(rig: RigConfig, rng: np.random.Generator, r: RigRandomization) -> RigConfig:
    from dataclasses import replace

    from perception import geometry

    cams = []
    for cam in rig.cameras:
        R = geometry.rot_z(np.radians(rng.uniform(-r.yaw_deg, r.yaw_deg))) @ \
            geometry.rot_y(np.radians(rng.uniform(-r.pitch_deg, r.pitch_deg))) @ \
            geometry.rot_x(np.radians(rng.uniform(-r.roll_deg, r.roll_deg)))
        T = cam.T_ego_from_camera.copy()
        T[:3, :3] = R @ T[:3, :3]
        T[:3, 3] += np.array([*rng.uniform(-r.translation_m, r.translation_m, 2), rng.uniform(-r.height_m, r.height_m)])
        K = cam.K.copy()
        s = 1.0 + rng.uniform(-r.hfov_scale, r.hfov_scale)
        K[0, 0] *= s
        K[1, 1] *= s
        cams.append(replace(cam, K=K, T_ego_from_camera=T))
    return replace(rig, cameras=tuple(cams))


RIG_CHOICE_STREAM = 7_300           # seed stream of the per-sample choice nominal / any rig


@dataclass(frozen=True)
class RigSampling:
    """Which rig a training sample is rendered with. "nominal": the rig file jittered by
    RigRandomization (the shipped model's recipe). "any": a rig from perception.rigs'
    distribution (3-6 cameras, any lens and mounting), except a `nominal_share` of the samples
    that stay on the jittered nominal rig so its quality holds."""
    kind: str = "nominal"
    nominal_share: float = 0.3

    def __post_init__(self):
        if self.kind not in ("nominal", "any"):
            raise ValueError(f"rig distribution {self.kind!r}: expected 'nominal' or 'any'")
        if not 0.0 <= self.nominal_share <= 1.0:
            raise ValueError(f"nominal share {self.nominal_share} is not in [0, 1]")


def sample_rig(sample_id: int, nominal: RigConfig, rng: np.random.Generator, randomization: RigRandomization,
               sampling: RigSampling | None = None) -> RigConfig:
    """The rig of one sample: the jittered nominal rig (drawing from `rng` as before), or under
    RigSampling("any") a training rig of perception.rigs (never a held-out one)."""
    if sampling is not None and sampling.kind == "any" and \
            np.random.default_rng([RIG_CHOICE_STREAM, sample_id]).random() >= sampling.nominal_share:
        from perception.rigs import training_rig

        return training_rig(sample_id)
    return randomize_rig(nominal, rng, randomization)


def boxes_to_array(boxes, cfg: ModelConfig) -> np.ndarray:
    """Ground-truth boxes inside the BEV range -> [MAX_OBJECTS, 10] (cls -1 = padding)."""
    out = np.full((MAX_OBJECTS, BOX_FIELDS), -1.0, np.float32)
    n = 0
    for b in boxes:
        x, y = b.center[:2]
        if not (cfg.bev_x_range[0] <= x < cfg.bev_x_range[1] and cfg.bev_y_range[0] <= y < cfg.bev_y_range[1]):
            continue
        if n == MAX_OBJECTS:
            break
        out[n] = [b.cls, *b.center, *b.size, b.yaw, *b.velocity]
        n += 1
    return out


def array_to_boxes(arr: np.ndarray) -> list[tuple]:
    """[MAX_OBJECTS, 10] -> list of (cls, center, size, yaw, velocity) for encode_targets."""
    return [(int(r[0]), r[1:4], r[4:7], float(r[7]), r[8:10]) for r in arr if r[0] >= 0]


SAMPLES_PER_WORLD = 4                # instants drawn from each world (building a world is the slow part)


@functools.lru_cache(maxsize=2)
def _world(world_seed: int):
    from perception.sim import World

    return World(world_seed)


def sample_instant(sample_id: int) -> tuple[int, np.random.Generator, int]:
    """(world seed, the sample's random generator, its instant). Samples come in runs of
    SAMPLES_PER_WORLD instants of one world, anywhere in its first hour (minutes apart, so
    the traffic differs)."""
    world_seed = sample_id // SAMPLES_PER_WORLD
    rng = np.random.default_rng([world_seed, sample_id % SAMPLES_PER_WORLD])
    return world_seed, rng, int(rng.integers(0, 3_600_000_000_000))


def render_sample(sample_id: int, rig: RigConfig, cfg: ModelConfig, randomization: RigRandomization,
                  sampling: RigSampling | None = None):
    """One frame set: images [N, H, W, 3] uint8 at model resolution, K^-1 [N, 3, 3],
    T_ego_from_camera [N, 4, 4], boxes [MAX_OBJECTS, 10] (the visible ones inside the model's
    BEV grid: the training targets). N is the sample's rig's camera count (`sample_rig`; `rig`
    itself without `sampling`)."""
    images, kinv, T, boxes = render_sample_visible(sample_id, rig, cfg, randomization, sampling)
    return images, kinv, T, boxes_to_array(boxes, cfg)


def render_sample_visible(sample_id: int, rig: RigConfig, cfg: ModelConfig, randomization: RigRandomization,
                          sampling: RigSampling | None = None):
    """render_sample with the truth as every visible simulator box (sim/truth.py), whatever its
    distance: what evaluation scores (metrics.CLASS_RANGE cuts it, not the model's grid)."""
    from perception.inputs import camera_inputs, resize_into
    from perception.sim import render
    from perception.sim.truth import MIN_VISIBLE_PX, visible_pixels

    world_seed, rng, t_ns = sample_instant(sample_id)
    world = _world(world_seed)
    scene = world.scene_at(t_ns)
    the_rig = sample_rig(sample_id, rig, rng, randomization, sampling)
    W, H = cfg.image_width, cfg.image_height
    n = len(the_rig.cameras)
    images = np.empty((n, H, W, 3), np.uint8)
    kinv = np.empty((n, 3, 3), np.float32)
    T = np.empty((n, 4, 4), np.float32)
    for i, cam in enumerate(the_rig.cameras):
        resize_into(render(scene, cam), images[i])          # rendered at the rig's resolution, as live
        kinv[i], T[i] = camera_inputs(cam, W, H)
    visible = visible_pixels(scene, the_rig)
    boxes = [b for b, v in zip(scene.boxes, visible) if v >= MIN_VISIBLE_PX]
    return images, kinv, T, boxes


@dataclass(frozen=True)
class DatasetSpec:
    split_seed: int                  # first sample id (world seed = sample id // SAMPLES_PER_WORLD)
    size: int
    rig_path: str
    image_width: int
    image_height: int
    bev: tuple
    randomization: RigRandomization
    rigs: RigSampling = RigSampling()

    def key(self) -> str:
        rig = Path(self.rig_path).read_bytes()
        sim_src = b"".join(p.read_bytes() for p in sorted((REPO_ROOT / "perception" / "sim").glob("*.py")))
        fields = asdict(self)
        if self.rigs.kind == "nominal":
            fields.pop("rigs")                 # the key of a nominal dataset is what it was before rig sampling
        else:
            sim_src += (REPO_ROOT / "perception" / "rigs.py").read_bytes()
        h = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode() + rig + sim_src)
        return h.hexdigest()[:12]


class SimDataset:
    """Rendered samples in memory-mapped arrays: images [S, N, H, W, 3] uint8, intrinsics_inv
    [S, N, 3, 3], ego_from_camera [S, N, 4, 4], boxes [S, MAX_OBJECTS, 10], camera_mask [S, N]
    (0: a slot beyond the sample's rig, padded with zeros and identity calibration)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.intrinsics_inv = np.load(folder / "intrinsics_inv.npy")
        self.ego_from_camera = np.load(folder / "ego_from_camera.npy")
        self.boxes = np.load(folder / "boxes.npy")
        mask_file = folder / "camera_mask.npy"
        self.camera_mask = np.load(mask_file) if mask_file.exists() else np.ones(self.images.shape[:2], np.float32)

    def __len__(self) -> int:
        return len(self.boxes)


def _render_worker(job):
    seed, rig_path, cfg, randomization, sampling = job
    cv2.setNumThreads(1)
    return render_sample(seed, load_rig(rig_path), cfg, randomization, sampling)


def build_dataset(spec: DatasetSpec, cfg: ModelConfig, workers: int = 2, cache_dir: Path = CACHE_DIR,
                  progress: bool = True) -> SimDataset:
    """Render (or reuse from the cache) `spec.size` samples starting at world seed `spec.split_seed`."""
    from tqdm import tqdm

    folder = cache_dir / f"{spec.split_seed}_{spec.size}_{spec.key()}"
    if (folder / "done").exists():
        log.info("dataset: reusing %s", folder)
        return SimDataset(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rig = load_rig(spec.rig_path)
    n = len(rig.cameras) if spec.rigs.kind == "nominal" else cfg.num_cameras   # any rig: padded to the model's slots
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8,
                                       (spec.size, n, cfg.image_height, cfg.image_width, 3))
    kinv = np.zeros((spec.size, n, 3, 3), np.float32)
    T = np.zeros((spec.size, n, 4, 4), np.float32)
    boxes = np.zeros((spec.size, MAX_OBJECTS, BOX_FIELDS), np.float32)
    mask = np.zeros((spec.size, n), np.float32)
    kinv[:] = np.eye(3, dtype=np.float32)
    T[:] = np.eye(4, dtype=np.float32)
    jobs = [(spec.split_seed + i, spec.rig_path, cfg, spec.randomization, spec.rigs) for i in range(spec.size)]
    # chunks of whole worlds per worker, so each world is built once
    ctx = mp.get_context("spawn" if workers > 1 else "fork")
    with ctx.Pool(workers) if workers > 1 else _Serial() as pool:
        it = pool.imap(_render_worker, jobs, chunksize=4 * SAMPLES_PER_WORLD)
        for i, (im, ki, t, b) in enumerate(tqdm(it, total=spec.size, desc="rendering scenes", unit="scene",
                                                disable=not progress)):
            m = len(im)
            if m > n:
                raise ValueError(f"sample {spec.split_seed + i} has {m} cameras, the dataset {n} slots")
            images[i, :m], kinv[i, :m], T[i, :m], boxes[i], mask[i, :m] = im, ki, t, b, 1.0
    images.flush()
    np.save(folder / "camera_mask.npy", mask)
    np.save(folder / "intrinsics_inv.npy", kinv)
    np.save(folder / "ego_from_camera.npy", T)
    np.save(folder / "boxes.npy", boxes)
    (folder / "spec.json").write_text(json.dumps(asdict(spec), default=str, indent=1))
    (folder / "done").touch()
    return SimDataset(folder)


class _Serial:
    """Pool stand-in for workers=1 (no subprocesses: simpler to debug and profile)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, jobs, chunksize=1):
        return map(fn, jobs)
