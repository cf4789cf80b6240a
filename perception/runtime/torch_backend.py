"""PyTorch backend: the reference implementation and the embedded default on CPUs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from perception.runtime.base import OUTPUT_NAMES, Engine, check_inputs


class TorchEngine(Engine):
    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int | None = None,
                 allow_random_init: bool = False):
        from perception.model.cpu_tuning import tune_cpu_allocator
        from perception.model.weights import load_model

        tune_cpu_allocator()
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model, self.config = load_model(model_dir, allow_random_init=allow_random_init)
        self.model.to(self.device).eval()
        self.name = f"torch-{self.device.type}"

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs)
        args = [torch.from_numpy(inputs[n]).to(self.device) for n in
                ("images", "intrinsics_inv", "ego_from_camera", "camera_mask")]
        out = self.model(*args)
        return {n: out[n].cpu().numpy() for n in OUTPUT_NAMES}
