#!/usr/bin/env bash
# Install pgsl_ext and the pgsl trainer (editable) and their build/test/benchmark dependencies
# into the active Python. torch comes first: the extension is compiled against the installed
# torch, without build isolation. The compile shows its progress (ninja's [k/n] steps, one line
# per source file); setup.py's summary (CPU-only or CPU + CUDA, architectures, sources) follows.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
log=$(mktemp)
echo "pgsl_ext: compiling the extension (several minutes on 2 cores with the CUDA kernels)"
set +e
python -m pip install --no-build-isolation --no-deps -v -e . 2>&1 | tee "$log" \
  | { grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\] ' \
      | sed -u -E 's/^ *(\[[0-9]+\/[0-9]+\]).* -c ([^ ]+) .*/pgsl_ext: \1 \2/'; true; }
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  tail -n 80 "$log"
  echo "pgsl_ext: build failed (full log: $log)" >&2
  exit 1
fi
grep -E "^ *pgsl_ext:" "$log" | sed 's/^ *//'
rm -f "$log"
python -c "import pgsl_ext, json; print('pgsl_ext build:', json.dumps(pgsl_ext.build_info()))"
