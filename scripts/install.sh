#!/usr/bin/env bash
# Install pgsl_ext (editable) and its build/test/benchmark dependencies into the active Python.
# torch comes first: the extension is compiled against the installed torch, without build
# isolation. setup.py's summary (CPU-only or CPU + CUDA, architectures, sources) is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
log=$(mktemp)
if ! python -m pip install --no-build-isolation --no-deps -v -e . >"$log" 2>&1; then
  tail -n 80 "$log"
  echo "pgsl_ext: build failed (full log: $log)" >&2
  exit 1
fi
grep -E "^ *pgsl_ext:" "$log" | sed 's/^ *//'
rm -f "$log"
python -c "import pgsl_ext, json; print('pgsl_ext build:', json.dumps(pgsl_ext.build_info()))"
