"""The numbers of docs/fleet.md: N simulated drives (6 cameras, ground truth) replayed one by one in
this process (the reference, and single-process throughput), then by `perception fleet` on a local
Ray; checks that the pooled metrics are the same numbers, and times reading and aggregation.

    scripts/fleet_demo.sh [N_DRIVES] [SECONDS] [WORKERS]      # writes under /tmp/fleet_demo
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from perception import fleet


def main(root: Path, n: int, seconds: float, workers: int) -> int:
    from perception.record import read_messages
    from perception.replay import OfflineReplay, ReplayConfig
    from perception.sim.drive import write_sim_drive

    drives = root / "drives"
    drives.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i in range(n):
        p = drives / f"drive{i:03d}.mcap"
        if not p.exists():
            write_sim_drive(p, seconds=seconds, seed=1000 + i)
    paths = sorted(drives.glob("*.mcap"))[:n]
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"{len(paths)} drives, {mb:.1f} MB ({time.perf_counter() - t:.1f} s to make or find)")

    t = time.perf_counter()
    msgs = sum(1 for p in paths for _ in read_messages(p))
    read_s = time.perf_counter() - t
    print(f"read + decode only: {msgs} messages, {mb / read_s:.0f} MB/s in one process")

    cfg = ReplayConfig(backend="torch", threads=1)
    t = time.perf_counter()
    engine = OfflineReplay(cfg).engine
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    reference, summaries = fleet.replay_one_by_one(paths, cfg, engine=engine)
    one_s = time.perf_counter() - t
    sets = sum(x.sets for x in summaries)
    print(f"one by one, one process, --threads 1: {sets} frame sets in {one_s:.1f} s = {sets / one_s:.1f} sets/s "
          f"(+ engine load {load_s:.2f} s); mAP {reference['mAP']:.6f} NDS {reference['NDS']:.6f}")

    out = root / "run_a"
    cmd = [sys.executable, "-m", "perception.cli", "fleet", str(drives / "*.mcap"), "--out", str(out),
           "--workers", str(workers), "--threads", "1", "--num-cpus", str(workers), "--log-level", "WARNING"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    fleet_s = time.perf_counter() - t
    print(r.stdout)
    if r.returncode:
        print(r.stderr[-3000:])
        return 1
    s = json.loads((out / "summary.json").read_text())
    same = json.dumps(s["metrics"]) == json.dumps(reference)
    busy = sum(d["replay_s"] for d in s["per_drive"])
    print(f"fleet ({workers} workers): {s['frame_sets']} frame sets, command wall {fleet_s:.1f} s "
          f"= {s['frame_sets'] / fleet_s:.1f} sets/s end to end; run {s['run']['wall_s']:.1f} s incl. Ray start; "
          f"replay busy {busy:.1f} s summed over workers = {s['frame_sets'] / busy * workers:.1f} sets/s steady across the pool")
    print(f"engine load per worker: {', '.join(f'{v:.2f} s' for v in s['engine_load_s'].values())}; "
          f"aggregation (load {len(paths)} matches files + pool + evaluate): {s['aggregation_s'] * 1e3:.0f} ms")
    print(f"pooled metrics identical to one-by-one replay: {same}")
    t = time.perf_counter()
    r2 = subprocess.run(cmd, capture_output=True, text=True)
    print(f"rerun into the same --out: {time.perf_counter() - t:.1f} s; " + next(
        (ln for ln in r2.stdout.splitlines() if ln.startswith("drives:")), r2.stderr[-500:]))
    return 0 if same else 1


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(main(Path("/tmp/fleet_demo"), int(a[0]) if a else 24, float(a[1]) if len(a) > 1 else 2.0, int(a[2]) if len(a) > 2 else 2))
