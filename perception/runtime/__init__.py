"""Engine backends behind one interface (see base.Engine) and the factory that picks one."""
from __future__ import annotations

import logging
from pathlib import Path

from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES, Engine

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch")


def create_engine(backend: str, model_dir: str | Path, *, threads: int | None = None,
                  allow_random_init: bool = False) -> Engine:
    """Load the model in `model_dir` with the requested backend ("auto" picks the best available)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    from perception.runtime.torch_backend import TorchEngine

    engine = TorchEngine(model_dir, threads=threads, allow_random_init=allow_random_init)
    log.info("engine: %s (%s)", engine.name, model_dir)
    return engine


__all__ = ["BACKENDS", "INPUT_NAMES", "OUTPUT_NAMES", "Engine", "create_engine"]
