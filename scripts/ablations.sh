#!/usr/bin/env bash
# Ablations of the seed's claims, each trained with the same budget (STEPS steps of batch 8,
# lr 2e-3, the recipe the README's table was measured with, on the same cached scenes) and
# evaluated on the same test scenes:
#   baseline    the shipped architecture
#   no_pos      no patch position, no ray embedding, no BEV position, no relative geometry, no token depth
#   no_cross    each BEV cell attends to the one camera it projects into best
#   one_head    1 attention head instead of 4
# Usage: bash scripts/ablations.sh [STEPS] [SCENES]   -> runs/ablations/table.md
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-800}
SCENES=${2:-200}
PY=${PY:-.venv/bin/python}
OUT=runs/ablations
declare -A SETS=([baseline]="" [no_pos]="use_position_embedding=false token_depth=false" [no_cross]="cross_view=false" [one_head]="heads=1")
for name in baseline no_pos no_cross one_head; do
  if [ ! -f "$OUT/$name/model.safetensors" ]; then
    # shellcheck disable=SC2086
    $PY -m perception.cli train --steps "$STEPS" --batch 8 --lr 2e-3 --warmup 200 --out "$OUT/$name" --no-progress ${SETS[$name]:+--set ${SETS[$name]}}
  fi
  $PY -m perception.cli eval --model "$OUT/$name" --scenes "$SCENES" --no-progress --json "$OUT/$name/eval.json"
done
$PY -m perception.tools.ablation_table "$OUT" baseline no_pos no_cross one_head | tee "$OUT/table.md"
