"""Two model directories through Inductor and eager in one process, timed interleaved (each round
runs all four once), so machine drift moves them alike. Used to measure what token depth cost
the Inductor engine (README, Engines).

    .venv/bin/python scripts/inductor_ab.py runs/prev_shipped engines/bev_vit [--iters 60]

The model shipped before token depth is in git history:
    mkdir -p runs/prev_shipped && for f in config.yaml model.safetensors; do
      git show d0b2172:engines/bev_vit/$f > runs/prev_shipped/$f; done
"""
import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs=2, help="two model directories (config.yaml + model.safetensors)")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch._inductor.config as inductor_config

    from perception.inputs import example_inputs
    from perception.model.cpu_tuning import tune_cpu_allocator
    from perception.model.weights import load_model

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    inductor_config.freezing = True          # as the inductor engine compiles (runtime/torch_backend.py)
    fns = {}
    with torch.inference_mode():
        for d in args.models:
            model, cfg = load_model(d)
            x = example_inputs(cfg, 1, 0)
            geo = model.geometry(*x[1:])     # cached per calibration by the engines, so not timed
            compiled = torch.compile(model.forward_features, dynamic=False)
            t0 = time.time()
            compiled(x[0], geo)
            print(f"{d}: compiled in {time.time() - t0:.1f} s", flush=True)
            fns[f"{d} inductor"] = (compiled, x[0], geo)
            fns[f"{d} eager"] = (model.forward_features, x[0], geo)
        for _ in range(3):
            for f, im, g in fns.values():
                f(im, g)
        times = {k: [] for k in fns}
        for _ in range(args.iters):
            for k, (f, im, g) in fns.items():
                t0 = time.perf_counter()
                f(im, g)
                times[k].append(1e3 * (time.perf_counter() - t0))
    for k, v in times.items():
        print(f"{k:40s} p50 {np.median(v):6.2f} ms")


if __name__ == "__main__":
    main()
