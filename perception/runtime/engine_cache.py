"""The engine cache: which compiled artifact (TensorRT engine, Inductor package) may be loaded here.

A TensorRT engine is only valid for the ONNX it was built from, the TensorRT version that built
it, the GPU model and compute capability it was tuned on, its precision and its input shapes.
Loading one built for anything else either fails or silently runs the wrong network; a stale
engine is a common field problem of TensorRT nodes. So:

- the cache key (EngineKey) holds all of those facts;
- engines live in engines/<model>/ as <model>.<precision>.<digest>.engine, each with a JSON
  sidecar <...>.engine.json holding the whole key and the engine file's sha256;
- lookup() compares the *whole* stored key with the wanted one (never only the digest in the file
  name) and the engine file with its recorded hash; anything missing, unreadable or different
  answers "rebuild" with the reason, never "load".

Pure Python: no TensorRT or GPU needed, so the logic is tested everywhere (tests/test_engine_cache.py
fakes the TensorRT/GPU facts).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

KEY_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
KEY_FIELDS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision", "input_shapes")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str                               # "major.minor", e.g. "9.0"
    precision: str                                        # fp32 | fp16 | int8
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # ((name, dims), ...) in input order

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        shapes = tuple((str(n), tuple(int(d) for d in dims)) for n, dims in self.input_shapes)
        object.__setattr__(self, "input_shapes", shapes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_shapes"] = {n: list(dims) for n, dims in self.input_shapes}
        d["key_format"] = KEY_FORMAT
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def make_key(onnx_sha256: str, facts: dict, precision: str, input_shapes) -> EngineKey:
    """facts: {"tensorrt_version", "gpu_name", "compute_capability"} (tensorrt_backend.target_facts()
    on a real machine, a dict in tests). input_shapes: {name: dims} or ((name, dims), ...)."""
    items = input_shapes.items() if isinstance(input_shapes, dict) else input_shapes
    return EngineKey(onnx_sha256=onnx_sha256, tensorrt_version=str(facts["tensorrt_version"]),
                     gpu_name=str(facts["gpu_name"]), compute_capability=str(facts["compute_capability"]),
                     precision=precision, input_shapes=tuple(items))


def default_cache_dir(model_dir) -> Path:
    """Where compiled artifacts of `model_dir` live: $PERCEPTION_ENGINE_CACHE/<model dir name> when
    set, else the model directory itself when writable, else ~/.cache/perception/engines/<name>."""
    model_dir = Path(model_dir)
    if os.environ.get("PERCEPTION_ENGINE_CACHE"):
        return Path(os.environ["PERCEPTION_ENGINE_CACHE"]) / model_dir.name
    if os.access(model_dir, os.W_OK):
        return model_dir
    return Path.home() / ".cache" / "perception" / "engines" / model_dir.name


def engine_path(cache_dir, model_name: str, key: EngineKey) -> Path:
    return Path(cache_dir) / f"{model_name}.{key.precision}.{key.digest()}.engine"


def engine_sidecar_path(path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower() or "unknown"


def timing_cache_path(cache_dir, facts: dict) -> Path:
    """One timing cache per (GPU model, compute capability, TensorRT version): TensorRT rejects a
    cache from another device or version, so they never share a file."""
    return Path(cache_dir) / (f"timing.{_slug(facts['gpu_name'])}.sm{_slug(str(facts['compute_capability']))}"
                              f".trt{_slug(str(facts['tensorrt_version']))}.timing_cache")


@dataclass(frozen=True)
class Lookup:
    action: str          # "load" or "rebuild"
    path: Path
    reason: str

    @property
    def load(self) -> bool:
        return self.action == "load"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lookup_artifact(path, wanted_key: dict, what: str = "engine") -> Lookup:
    """"load" only when the artifact file exists, its sidecar is readable, the sidecar's key equals
    `wanted_key` field by field and the file's sha256 equals the recorded one; else "rebuild" + why.
    Shared by every compiled artifact (TensorRT engines, Inductor packages)."""
    path = Path(path)
    if not path.exists():
        return Lookup("rebuild", path, f"no cached {what} for this key")
    side = engine_sidecar_path(path)
    try:
        data = json.loads(side.read_text())
    except FileNotFoundError:
        return Lookup("rebuild", path, f"sidecar {side.name} is missing")
    except (OSError, ValueError) as e:
        return Lookup("rebuild", path, f"sidecar {side.name} is unreadable ({e.__class__.__name__})")
    stored = data.get("key") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        return Lookup("rebuild", path, f"sidecar {side.name} has no key")
    if stored != wanted_key:
        fields = sorted(k for k in set(wanted_key) | set(stored) if stored.get(k) != wanted_key.get(k))
        return Lookup("rebuild", path, f"cached {what} was built for a different " + ", ".join(fields))
    if data.get("engine_sha256") != _sha256(path):
        return Lookup("rebuild", path, f"{what} file does not match the sha256 in its sidecar (truncated or replaced)")
    return Lookup("load", path, f"cached {what} matches the key")


def lookup(cache_dir, model_name: str, key: EngineKey) -> Lookup:
    """The TensorRT engine for `key` in `cache_dir`: lookup_artifact on its file name."""
    return lookup_artifact(engine_path(cache_dir, model_name, key), key.as_dict())


def atomic_write(path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file in the same folder, then rename over `path`: readers see the old
    file or the new one, never half of one (two processes exporting at once is harmless)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def store_artifact(path, key: dict, data: bytes, extra: dict | None = None) -> Path:
    """Write the artifact, then its sidecar (both atomically: a crash mid-write leaves either the
    old pair or a file without a matching sidecar, which lookup_artifact() rebuilds)."""
    path = Path(path)
    data = bytes(data)
    atomic_write(path, data)
    side = {"key": key, "engine_file": path.name, "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_bytes": len(data), **(extra or {})}
    atomic_write(engine_sidecar_path(path), (json.dumps(side, indent=1) + "\n").encode())
    return path


def store(cache_dir, model_name: str, key: EngineKey, engine_bytes: bytes, extra: dict | None = None) -> Path:
    """Store a TensorRT engine under its key's file name (store_artifact)."""
    return store_artifact(engine_path(cache_dir, model_name, key), key.as_dict(), engine_bytes,
                          extra={"digest": key.digest(), **(extra or {})})
