"""Fuzz the fusion node's per-message path outside pytest (target: >= 100,000 inputs, 0 unhandled).

    python scripts/fuzz_node.py                 # 100000 inputs, seed 0
    python scripts/fuzz_node.py -n 1000000 --seed 7

Runs the generator of perception/fusion/fuzz.py (the one the hypothesis test in
tests/test_node_faults.py drives) into FusionNode.step, as the node's loop does with what its
subscriber drains, with a stub engine (perception.fusion.fuzz.FuzzEngine). Prints the number of
inputs, exceptions that escaped the node (unhandled), exceptions the node caught and counted
(internal_error: an input no explicit check refused), inputs its counters do not account for,
whether non-finite calibration ever reached the model's geometry inputs, and the rejections per
reason. Exits 1 unless all of those are 0.
"""
from __future__ import annotations

import argparse
import collections
import logging
import random
import sys
import tempfile
import time
import traceback

import numpy as np

from perception import config as cfg
from perception.fusion.fuzz import FuzzEngine, FuzzState, next_input
from perception.fusion.node import FusionNode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rig", default=str(cfg.DEFAULT_RIG))
    ap.add_argument("--quiet-log", action="store_true", help="only errors from the node's logger")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR if args.quiet_log else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        rig = cfg.load_rig(args.rig)
        eps = tuple(f"ipc://{tmp}/cam{i}" for i in range(len(rig.cameras)))
        config = cfg.FusionNodeConfig(rig=args.rig, camera_endpoints=eps, publish=f"ipc://{tmp}/fusion",
                                      allow_random_init=True, threads=1, online_score=True)
        node = FusionNode(config, engine=FuzzEngine(rng))
        st = FuzzState(rig=rig, now_ns=time.time_ns())
        escaped: collections.Counter[str] = collections.Counter()
        first_tb = None
        nonfinite_geometry = 0        # checks (every 100 inputs) that found non-finite model geometry
        t0 = time.monotonic()
        try:
            for i in range(args.inputs):
                rx = next_input(rng, st)
                try:
                    node.step([rx], st.now_ns)
                    if i % 100 == 99:
                        node.status_message(st.now_ns).SerializeToString()
                        pre = node.pipeline.preprocess
                        if not (np.isfinite(pre.intrinsics_inv).all() and np.isfinite(pre.ego_from_camera).all()):
                            nonfinite_geometry += 1
                except Exception as e:     # noqa: BLE001 - what the node let escape
                    escaped[type(e).__name__] += 1
                    first_tb = first_tb or traceback.format_exc()
        finally:
            node.close()
        elapsed = time.monotonic() - t0
    counts = node.rejected_counts()
    print(f"inputs: {args.inputs} (seed {args.seed}) in {elapsed:.1f} s ({args.inputs / elapsed:.0f}/s)")
    print(f"unhandled (escaped the node): {sum(escaped.values())} {dict(escaped)}")
    print(f"internal_error (caught and counted): {counts.get('internal_error', 0)}; "
          f"process_error: {counts.get('process_error', 0)}; unaccounted inputs: {node.unaccounted_inputs()}")
    print(f"frames into the sync: {node.frames_pushed}; truth: {node.truth_received}; frame sets published: "
          f"{node.pipeline.outputs_count}; camera restarts: {sum(node.sync.stats.restarts.values())}")
    print(f"non-finite geometry inputs held (checked every 100 inputs): {nonfinite_geometry}")
    print("rejected per reason:")
    for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:32s} {n}")
    if first_tb:
        print("first escaped exception:\n" + first_tb, file=sys.stderr)
    bad = sum(escaped.values()) + counts.get("internal_error", 0) + counts.get("process_error", 0)
    return 1 if bad or nonfinite_geometry or node.unaccounted_inputs() else 0


if __name__ == "__main__":
    sys.exit(main())
