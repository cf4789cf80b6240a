#!/usr/bin/env bash
# What a newcomer gets, measured: a fresh clone with every cache deleted, then the README's first
# command, a second launch (compiled from the start), 20 Hz cameras and 2x overload (40 Hz).
# Prints each run's closing line (first-detection time, messages, latency percentiles, drops).
#
#   bash scripts/startup_check.sh [DURATION_S]     # default 60; about 6 x DURATION_S in all
#
# It deletes Inductor's cache (/tmp/torchinductor_$USER) and ~/.cache, as a new machine has
# neither. Run it on a quiet machine: the pipeline itself loads the cores.
set -euo pipefail
duration="${1:-60}"
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/perception-startup.XXXXXX)"
echo "== fresh clone of $src (HEAD $(git -C "$src" rev-parse --short HEAD)) in $work"
git clone -q "$src" "$work/perception"
cd "$work/perception"
rm -rf "/tmp/torchinductor_$(id -un)" ~/.cache
python3 -m venv .venv && .venv/bin/pip install -q -e . 2>&1 | grep -v '^WARNING' || true
rm -rf "/tmp/torchinductor_$(id -un)" ~/.cache
ls engines/bev_vit/*.pt2 2>/dev/null && { echo "a compiled package is already there: not a cold start" >&2; exit 1; }

run() {   # label, launch args...
  local label="$1"; shift
  .venv/bin/perception launch --duration "$duration" "$@" > "$work/$label.log" 2>&1 || true
  echo "-- $label: $(grep -E 'engine switch|received' "$work/$label.log" | sed 's/^.*INFO: //' | tr '\n' ' ')"
}

run cold_10hz
echo "   waiting for the background build to finish ..."
for _ in $(seq 1 120); do pgrep -f "build-engine --backend inductor" > /dev/null || break; sleep 5; done
tail -n 2 engines/bev_vit/*.build.log | sed 's/^/   /'
run warm_10hz
run warm_20hz --arg camera_rate=20
run overload_40hz --arg camera_rate=40
echo "== logs in $work (per-process logs under $work/perception/out/logs/sim)"
