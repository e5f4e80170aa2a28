#!/usr/bin/env bash
# The seeded report of issue 18 (results/mnist5k-seeds): every run scripts/seeds.sh trained,
# attacked under the research protocol (pgsl evaluate --full). Resumable: run it again after an
# interruption and it continues from the last finished run and part.
# Usage: scripts/evaluate_seeds.sh [RUNS] [OUT]   (defaults: runs/seeds, results/mnist5k-seeds); DEFENSES
# (default "none pgsl arch noise nopeek") and SEEDS (default "0 1 2") pick the runs.
set -euo pipefail
runs=${1:-runs/seeds}
out=${2:-results/mnist5k-seeds}
folders=()
for defense in ${DEFENSES:-none pgsl arch noise nopeek}; do
  for seed in ${SEEDS:-0 1 2}; do
    folders+=("$runs/$defense-s$seed")
  done
done
resume=()
[ -f "$out/report.json" ] && resume=(--resume)
pgsl evaluate --compare "${folders[@]}" --full --out "$out" "${resume[@]}"
