#!/usr/bin/env bash
# Train the runs behind results/mnist5k-seeds: every defence of the report (and the architecture
# control) at several training seeds, 2 epochs on mnist5k, one run folder each under OUT
# (default runs/seeds): OUT/<defense>-s<seed>. Resumable: a finished run is skipped, a
# half-finished one continues with --resume. Usage: scripts/seeds.sh [OUT] [SEEDS...]; DEFENSES (default
# "none pgsl noise nopeek arch") picks the configurations.
set -euo pipefail
out=${1:-runs/seeds}
shift || true
seeds=${*:-0 1 2}
for seed in $seeds; do
  for defense in ${DEFENSES:-none pgsl noise nopeek arch}; do
    dir="$out/$defense-s$seed"
    if [ -f "$dir/metrics.json" ] && python -c 'import json,sys; m=json.load(open(sys.argv[1])); c=json.load(open(sys.argv[2])); sys.exit(0 if m["epochs"] >= c["epochs"] else 1)' "$dir/metrics.json" "$dir/config.json" 2>/dev/null; then
      echo "done: $dir"; continue
    fi
    resume=()
    [ -f "$dir/config.json" ] && resume=(--resume)
    pgsl train --defense "$defense" --seed "$seed" --out "$dir" "${resume[@]}"
  done
done
