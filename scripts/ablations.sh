#!/usr/bin/env bash
# Ablations of the seed's claims, each trained with the same budget (STEPS steps of batch 8, lr 2e-3,
# warm-up 200) on the same cached scenes of the shipped recipe (16000 any-rig scenes: a rig per
# sample, 30 % nominal), and evaluated on the same test scenes of the nominal rig and of the
# held-out 3-camera rig rigs/heldout/narrow_car_3cam.yaml:
#   baseline    the shipped architecture
#   no_pos      no patch position, no ray embedding, no BEV position, no relative geometry, no token depth
#   no_cross    each BEV cell attends to the one camera it projects into best
#   one_head    1 attention head instead of 4
# Usage: bash scripts/ablations.sh [STEPS] [SCENES]   -> runs/ablations/table.md (README: Ablations)
# RUNS="baseline no_cross" picks and orders the runs (default all four); a run already trained is only re-evaluated.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
SCENES=${2:-300}
PY=${PY:-.venv/bin/python}
OUT=runs/ablations
HELDOUT=rigs/heldout/narrow_car_3cam.yaml
declare -A SETS=([baseline]="" [no_pos]="use_position_embedding=false token_depth=false" [no_cross]="cross_view=false" [one_head]="heads=1")
RUNS=${RUNS:-baseline no_pos no_cross one_head}
for name in $RUNS; do
  if [ ! -f "$OUT/$name/model.safetensors" ]; then
    # shellcheck disable=SC2086
    $PY -m perception.cli train --scenes 16000 --rig-distribution any --nominal-share 0.3 \
      --steps "$STEPS" --batch 8 --lr 2e-3 --warmup 200 --out "$OUT/$name" --no-progress ${SETS[$name]:+--set ${SETS[$name]}}
  fi
  $PY -m perception.cli eval --model "$OUT/$name" --scenes "$SCENES" --no-progress --json "$OUT/$name/eval.json"
  $PY -m perception.cli eval --model "$OUT/$name" --rig "$HELDOUT" --scenes "$SCENES" --no-progress \
    --json "$OUT/$name/eval_narrow_car_3cam.json"
done
# the table covers every run trained so far, baseline first (its ratios are against the first run)
trained=(); for name in baseline no_pos no_cross one_head; do [ -f "$OUT/$name/eval.json" ] && trained+=("$name"); done
$PY -m perception.tools.ablation_table "$OUT" "${trained[@]}" --extra eval_narrow_car_3cam.json \
  | tee "$OUT/table.md"
