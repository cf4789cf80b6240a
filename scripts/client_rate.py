"""Steps per second through the client (perception.client) in lock-step on the built-in world,
next to the engine-alone rate of `perception bench`, alternating in one run (the speed of these
shared cores drifts: compare only numbers from one run), and whether the same scenario twice gives
identical detections.

    python scripts/client_rate.py [--steps 40] [--rounds 3] [--seed 2] [--threads 1] [--json out/client/rate.json]

Per round: `perception bench --backends torch --threads T --no-sweep --no-fusion` (engine alone),
then N lock-step steps with images rendered beforehand (render excluded), then N steps that render
each instant first (render included, as a simulator loop runs)."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def engine_alone_hz(threads: int, iters: int) -> float:
    out = subprocess.run([sys.executable, "-m", "perception.cli", "bench", "--backends", "torch", "--threads", str(threads),
                          "--iters", str(iters), "--no-sweep", "--no-fusion", "--json", "/tmp/client_rate_bench.json"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"^torch-cpu\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)\s", out, re.M)   # the table's Hz column
    if m is None:
        raise RuntimeError(f"no rate in perception bench's output:\n{out}")
    return float(m.group(1))


def objects_of(d) -> tuple:
    return d.stamp_ns, tuple(d.missing_cameras), tuple(o.SerializeToString(deterministic=True) for o in d.objects)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=40, help="perception bench iterations")
    p.add_argument("--json", default="out/client/rate.json")
    a = p.parse_args(argv)

    from perception.client import Session
    from perception.sim.bridge import BuiltinWorldBridge

    instants = [k * 100_000_000 for k in range(a.steps)]
    rounds = []
    with Session.start(backend="torch", threads=a.threads) as s:
        bridge = BuiltinWorldBridge(s, a.seed)
        frames = [(t, bridge.render(t), bridge.truth(t)) for t in instants]
        s.step(frames[0][1], 0)                       # warm-up (first inference)
        runs = []
        for r in range(a.rounds):
            engine = engine_alone_hz(a.threads, a.iters)
            t0 = time.perf_counter()
            run = [objects_of(s.step(imgs, t, truth=truth).detections) for t, imgs, truth in frames]
            pre = len(frames) / (time.perf_counter() - t0)
            runs.append(run)
            t0 = time.perf_counter()
            render_s = 0.0
            for t in instants:
                st = bridge.step(t)
                render_s += st.render_s
            incl = len(instants) / (time.perf_counter() - t0)
            rounds.append({"engine_alone_hz": engine, "client_lockstep_hz_render_excluded": pre,
                           "client_lockstep_hz_render_included": incl, "render_ms_per_step": 1e3 * render_s / len(instants)})
            print(f"round {r + 1}: engine alone {engine:.1f} Hz | client lock-step {pre:.1f} steps/s (render excluded), "
                  f"{incl:.1f} steps/s (render included, {1e3 * render_s / len(instants):.0f} ms render/step)", flush=True)
    identical = all(run == runs[0] for run in runs[1:])
    for r, run in enumerate(runs[1:], 2):
        for k, (x, y) in enumerate(zip(runs[0], run)):
            if x != y:
                print(f"  round {r} step {k} differs from round 1: missing cameras {list(x[1])} vs {list(y[1])}, "
                      f"{len(x[2])} vs {len(y[2])} objects")
    print(f"same scenario ({a.steps} steps of world {a.seed}) {a.rounds} times: identical detections: {identical} "
          f"({sum(len(o) for _, _, o in runs[0])} objects per run)")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": a.steps, "seed": a.seed, "threads": a.threads, "rounds": rounds,
                               "identical_detections": identical}, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
