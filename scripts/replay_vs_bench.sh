#!/usr/bin/env bash
# Offline replay rate next to the engine-alone rate of `perception bench`, alternating in the same
# run (the machine's speed drifts by the hour: compare only numbers from one run of this script).
#
#   bash scripts/replay_vs_bench.sh DRIVE.mcap [BACKEND] [ROUNDS] [THREADS]    # defaults: torch 3 2
set -euo pipefail
drive="$1"; backend="${2:-torch}"; rounds="${3:-3}"; threads="${4:-2}"
P="${PERCEPTION:-perception}"
for r in $(seq 1 "$rounds"); do
  bench=$($P bench --backends "$backend" --threads "$threads" --iters 40 --no-sweep --no-fusion 2>&1 \
          | grep -oE '\(([0-9.]+) Hz' | head -1 | tr -d '(Hz ')
  replay=$($P replay "$drive" --offline --backend "$backend" --threads "$threads" --no-progress 2>&1 \
           | grep -oE '[0-9.]+ sets/s' | head -1 | cut -d' ' -f1)
  echo "round $r: engine alone $bench Hz, offline replay $replay sets/s, ratio $(python3 -c "print(f'{$replay/$bench:.2f}')")"
done
