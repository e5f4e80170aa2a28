"""The one writer of bench/RESULTS.md: a preamble, then marked sections
(``<!-- bench:KEY -->`` ... ``<!-- /bench:KEY -->``), one per suite and device. Every suite
(``bench/bandwidth.py``, ``bench/svt_rpca.py``, ``bench/bench_jsma.py``,
``bench/bench_rpca_methods.py``, ``bench/bench_train_step.py``, ``bench/small_matrix_model.py``,
``scripts/gpu_check.sh``) hands
its sections to :func:`update_results`, which replaces those and keeps the others (so CUDA results
from a GPU machine survive a CPU-only rerun).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

from bench._common import REPO_ROOT

DEFAULT_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"

SECTION_RE = r"<!-- bench:{0} -->\n.*?<!-- /bench:{0} -->\n"
SECTION_ORDER = ("cpu", "cpu-threads1", "cuda")
PREAMBLE = """# Benchmark results

Written by `python -m bench.table` (the suite in `bench/`, pytest-benchmark); do not edit by
hand. Each device (and CPU thread count) has its own section: a run replaces the sections it
measured and keeps the others.

How to read the tables:

- **median**: median over rounds of the wall time of one call (a round times a loop of calls
  when one call is too short to time alone; on CUDA every round is a loop of >= 1 ms with
  `torch.cuda.synchronize()` at both ends, so the sync is spread over the loop).
- **(min)**: the fastest round, for reference only; everything else is computed from the median.
- **GB/s**: bytes read + bytes written (each element once) / median time.
- **output**: `new` = the provider allocates its output on every call. Both ops do (they return
  a new tensor), as do the torch alternatives. `copy` is the one provider writing into a tensor
  allocated beforehand: `dst.copy_(src)` with `src`/`dst` the byte size of the op's output.
  `alloc_copy` is `src.clone()`, the same copy into a fresh tensor, i.e. the ceiling for an op
  that allocates its output. On the CPU a fresh tensor of >= 32 MiB costs a page fault per 4 KiB
  (glibc serves blocks that large with a new mmap and unmaps them on free), which is most of
  the cost on the 8x1x1024x1024 shape; on CUDA the caching allocator hides the allocation.
- **speed-up**: provider time / pgsl_ext time, i.e. how many times faster pgsl_ext is than the
  provider (< 1: pgsl_ext is slower).
- **% copy BW**, **% alloc_copy BW**: the provider's GB/s as a fraction of what `copy` /
  `alloc_copy` reach on the same shape and device.
"""


def marked(key: str, text: str) -> str:
    """``text`` (a Markdown section) between the markers :func:`update_results` finds it by."""
    return f"<!-- bench:{key} -->\n{text.rstrip()}\n<!-- /bench:{key} -->\n"


def update_results(path: Path, sections: Dict[str, str]) -> None:
    """Rewrites ``path``: the preamble, then one section per device (and thread count), keeping
    the old sections this run did not replace."""
    old = path.read_text() if path.exists() else ""
    kept = {}
    for key in re.findall(r"<!-- bench:([\w-]+) -->", old):
        match = re.search(SECTION_RE.format(re.escape(key)), old, flags=re.S)
        if match and key not in sections:
            kept[key] = match.group(0)
    merged = {**kept, **sections}
    order = sorted(merged, key=lambda k: (SECTION_ORDER.index(k) if k in SECTION_ORDER else 99, k))
    path.write_text(PREAMBLE + "".join("\n" + merged[d] for d in order))
