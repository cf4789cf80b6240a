#!/usr/bin/env bash
# Reproduces the numbers of docs/fleet.md: N simulated drives (default 24 x 2 s, 6 cameras, ground truth)
# one by one in one process, then through `perception fleet` on a local Ray (default 2 workers).
# Needs the fleet extra (pip install -e '.[fleet]'). Drives and runs go to /tmp/fleet_demo (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
exec "$PY" scripts/fleet_demo.py "${1:-24}" "${2:-2.0}" "${3:-2}"
