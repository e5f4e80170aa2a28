#!/usr/bin/env bash
# Install pgsl_ext, then run the main job. Until the split-learning trainer lands, that is the
# benchmark table: every op against its reference and the best plain-torch alternative, written
# to bench/RESULTS.md (and a PNG plot beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m bench.table
