#!/usr/bin/env bash
# The held-out rigs of docs/any_rig.md (rigs/heldout/): four rigs unlike the nominal one, from the
# held-out seed stream and partition of perception/rigs.py, which training never samples.
set -euo pipefail
OUT=${1:-rigs/heldout}
P="perception rigs generate --out $OUT"
$P --seed 1 --name narrow --cameras 3 3 --hfov 45 60                                  # 3 narrow lenses
$P --seed 2 --name wide_corners --cameras 4 4 --hfov 100 120 --body truck --mount corner  # 4 wide lenses on a truck's corners
$P --seed 3 --name high --cameras 5 5 --height 2.3 2.8                                # 5 cameras mounted high
$P --seed 4 --name pitched --cameras 6 6 --pitch 7 12                                 # 6 cameras pitched further down
