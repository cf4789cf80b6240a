"""Compiled CPU engines as artifacts: the model compiled ahead of time by AOTInductor into a
package (.pt2) in the engine cache, loaded like a TensorRT engine.

Why an artifact: compiling inside the serving process took 30-60 s on two cores before the
first detection, and Inductor's tracing patches process-wide state (it crashed a concurrent
eager forward). So compiling runs in its own process (`perception build-engine --backend
inductor`; the node starts one in the background when the cache has no artifact), and a node
loads the finished package (a shared library) in milliseconds.

What is compiled (ServedGraph): BEVViT.forward_features + sigmoid + decode at fixed shapes. The
calibration-only geometry (BEVViT.geometry) stays eager and cached per calibration by
TorchEngine; it enters the package as flat tensors, in the order its sidecar records.

Cache key: a digest of the weights and config, a digest of the model's source, torch version,
CPU ISA, thread count (the generated OpenMP code fixes it) and every input shape. A build compiles inside a private Inductor
cache folder that is deleted afterwards, so a build killed mid-link can never leave a broken
shared object in Inductor's shared cache; the package and its sidecar (sha256) are written
atomically, and lookup refuses anything truncated or replaced.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perception.runtime.engine_cache import Lookup, engine_sidecar_path, lookup_artifact, store_artifact

log = logging.getLogger(__name__)

KEY_FORMAT = 1
# CPU features that change what Inductor's C++ code generation emits
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
              "amx_bf16", "amx_int8", "asimd", "sve")


class ServedGraph(nn.Module):
    """What the artifact computes: pixels + cached geometry -> the engine's five outputs."""

    def __init__(self, model: Any, geometry_names: tuple[str, ...]):   # model: BEVViT
        super().__init__()
        self.model = model
        self.geometry_names = geometry_names

    def forward(self, images: torch.Tensor, *geometry: torch.Tensor):
        from perception.model.decode import decode

        out = self.model.forward_features(images, dict(zip(self.geometry_names, geometry)))
        heat = torch.sigmoid(out["heatmap_logits"].float())                 # [B, C, Hb, Wb]
        reg = out["regression"].float()                                     # [B, 10, Hb, Wb]
        boxes, scores, labels = decode(heat, reg, self.model.cfg, self.model.cfg.max_detections)
        return heat, reg, boxes, scores, labels


def cpu_isa() -> str:
    """torch's vector ISA level plus the CPU flags that matter to generated code, e.g.
    'AVX512+avx2+avx512_bf16+amx_tile...'."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    return "+".join([torch.backends.cpu.get_cpu_capability(), *sorted(f for f in _ISA_FLAGS if f in flags)])


def weights_digest(model: nn.Module, cfg) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes) and of the config: the same
    weights give the same digest wherever they were loaded from (random init included)."""
    h = hashlib.sha256(repr(cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def example_geometry(model: Any, cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stand-in images and the default rig's geometry, at batch 1: the shapes the artifact serves."""
    from perception.inputs import example_inputs

    images, k_inv, t, mask = example_inputs(cfg, 1)
    with torch.inference_mode():
        geo = model.geometry(k_inv, t, mask)
    return images, geo


def code_digest() -> str:
    """sha256 of the source the package is compiled from (the model package and this module): a
    changed graph with unchanged weights must not load an old package."""
    here = Path(__file__).resolve()
    files = sorted((here.parent.parent / "model").glob("*.py")) + [here]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def artifact_key(model: nn.Module, cfg, threads: int) -> dict:
    images, geo = example_geometry(model, cfg)
    shapes = {"images": list(images.shape), **{n: list(v.shape) for n, v in geo.items()}}
    return {"kind": "aoti-inductor-cpu", "key_format": KEY_FORMAT, "weights_sha256": weights_digest(model, cfg),
            "code_sha256": code_digest(),
            "torch_version": torch.__version__, "cpu_isa": cpu_isa(), "threads": int(threads),
            "precision": "fp32", "input_shapes": shapes}


def artifact_path(cache_dir, model_name: str, key: dict) -> Path:
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{model_name}.inductor.{digest}.pt2"


def find_artifact(cache_dir, model_name: str, key: dict) -> Lookup:
    return lookup_artifact(artifact_path(cache_dir, model_name, key), key, what="Inductor package")


class BuildInProgress(RuntimeError):
    """Another process holds the build lock of this artifact."""


@contextlib.contextmanager
def _build_lock(path: Path):
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildInProgress(f"another process is building {path.name} (lock {lock_path})") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def build_in_progress(path: Path) -> bool:
    """True while some process holds the build lock of `path`."""
    lock_path = path.with_name(f".{path.name}.lock")
    if not lock_path.exists():
        return False
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def build_artifact(model: nn.Module, cfg, cache_dir, model_name: str, threads: int, *, force: bool = False,
                   report=print) -> Path:
    """Export and compile the ServedGraph for `threads` CPU threads and store it in the cache.
    Returns the cached package (without rebuilding when a valid one exists, unless force).
    Raises BuildInProgress when another process is building the same artifact."""
    torch.set_num_threads(threads)
    key = artifact_key(model, cfg, threads)
    found = find_artifact(cache_dir, model_name, key)
    if found.load and not force:
        report(f"artifact cache hit: {found.path.name}")
        return found.path
    with _build_lock(found.path):
        report(f"building {found.path.name}: {'--force' if found.load else found.reason}")
        t0 = time.perf_counter()
        private = Path(tempfile.mkdtemp(prefix=f".{model_name}.inductor-build.", dir=str(found.path.parent)))
        old_env = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_COMPILE_THREADS")}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(private / "inductor")   # see the module docstring
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"                    # no worker pool beside a live node
        try:
            from torch._inductor import aoti_compile_and_package

            images, geo = example_geometry(model, cfg)
            names = tuple(geo)
            served = ServedGraph(model, names).eval()
            args = (images, *(geo[n].clone().contiguous() for n in names))
            with torch.no_grad():
                exported = torch.export.export(served, args, strict=False)
            report(f"exported in {time.perf_counter() - t0:.1f} s; compiling (C++ code generation and link)")
            pkg = aoti_compile_and_package(
                exported, package_path=str(private / "model.pt2"), inductor_configs={"freezing": True})
            data = Path(pkg).read_bytes()
        finally:
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(private, ignore_errors=True)
        seconds = time.perf_counter() - t0
        path = store_artifact(found.path, key, data, extra={
            "geometry_names": list(names), "build_seconds": round(seconds, 1), "built_unix": int(time.time()),
            "model_name": model_name})
    report(f"wrote {path} ({len(data) / 1e6:.1f} MB) in {seconds:.1f} s")
    return path


class CompiledGraph:
    """A loaded artifact: call(images, geo) -> the five outputs, as ServedGraph would give them.

    Loads through the package loader that torch's own aoti_load_package wraps: importing
    torch._inductor for that wrapper alone costs seconds of start-up on two cores (docs/engines.md).
    The package was compiled for contiguous inputs of fixed shapes and reads memory by those
    strides, so inputs are checked and made contiguous here (a strided view would be misread)."""

    def __init__(self, path: Path):
        import json

        side = json.loads(engine_sidecar_path(path).read_text())
        self.path = path
        self.geometry_names = tuple(side["geometry_names"])
        self.shapes = {n: tuple(s) for n, s in side["key"]["input_shapes"].items()}
        try:
            loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
            self._run = lambda flat: loader.boxed_run(flat)
        except (AttributeError, TypeError):       # the private loader moved: the public wrapper
            from torch._inductor import aoti_load_package

            runner = aoti_load_package(str(path))
            self._run = lambda flat: runner(*flat)

    def __call__(self, images: torch.Tensor, geo: dict[str, torch.Tensor]):
        args = [images, *(geo[n] for n in self.geometry_names)]
        for name, a in zip(("images", *self.geometry_names), args):
            if tuple(a.shape) != self.shapes[name]:
                raise ValueError(f"compiled engine {self.path.name}: {name} has shape {tuple(a.shape)}, "
                                 f"it was compiled for {self.shapes[name]}")
        return tuple(self._run([a.contiguous() for a in args]))


def load_artifact(path: Path) -> CompiledGraph:
    return CompiledGraph(Path(path))


def start_background_build(model_dir, cache_dir, threads: int, log_path: Path, allow_random_init: bool = False,
                           *, background: bool = True, force: bool = False) -> subprocess.Popen:
    """Start `perception build-engine --backend inductor` as its own process: by default on idle CPU
    time only (`--background`: the live pipeline comes first), output appended to log_path.

    It gets its own process group, so a launcher stopping the node's group leaves it to finish and
    cache its artifact, but stays in the caller's session: Linux schedules each session as one
    autogroup, and a build in a session of its own took half the CPU from the node whatever its
    scheduling policy (eager inference ran ~20x slower while it compiled)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "perception.cli", "build-engine", "--backend", "inductor", "--model",
           str(model_dir), "--cache-dir", str(cache_dir), "--threads", str(threads)]
    cmd += ["--background"] * background + ["--allow-random-init"] * allow_random_init + ["--force"] * force
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), **group)


def self_check(eager: nn.Module, compiled: CompiledGraph, cfg, seed: int = 0) -> dict:
    """Compare the compiled graph with the eager model on random pixels and the default rig:
    parity.compare_outputs' fields plus 'ok' (heatmap within the fp32 bound, same detections)."""
    from perception.runtime.parity import FP32_HEATMAP_ATOL, compare_outputs

    images, geo = example_geometry(eager, cfg)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=g)
    names = ("heatmap", "regression", "det_boxes", "det_scores", "det_labels")
    with torch.inference_mode():
        ref = ServedGraph(eager, compiled.geometry_names)(images, *(geo[n] for n in compiled.geometry_names))
        got = compiled(images, geo)
    ref_np = {n: t.numpy() for n, t in zip(names, ref)}
    got_np = {n: np.asarray(t) for n, t in zip(names, got)}
    cmp = compare_outputs(ref_np, got_np)
    cmp["ok"] = cmp["heatmap_max_abs_diff"] <= FP32_HEATMAP_ATOL and cmp["same_detections"]
    return cmp
