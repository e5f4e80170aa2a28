#!/usr/bin/env python
"""Two frontier points compared, paired by seed and image (pgsl.evaluate.seeds.paired_difference).

    python scripts/frontier_diff.py DIR POINT_A POINT_B [POINT_A POINT_B ...]

DIR: a sweep's folder (DIR/points/<point>-s<seed>/point.json); POINT: a point's name without its
seed, e.g. pgsl+noise-noise_scale-10, noise-noise_scale-30 or none. Prints, for each pair, A minus
B on the seeds both hold: the decision's test accuracy (points) and the decoder's PSNR against
the clean image (dB), each with its 95 % two-level bootstrap interval over seeds and images.
"""

import glob
import json
import os
import re
import sys

import numpy as np

from pgsl.evaluate.seeds import paired_difference


def _load(folder: str, point: str) -> dict:
    """``{seed: point.json}`` of ``point``'s done seeds."""
    done = {}
    for path in glob.glob(os.path.join(glob.escape(folder), "points", glob.escape(point) + "-s*", "point.json")):
        seed = re.fullmatch(r"s(\d+)", os.path.basename(os.path.dirname(path))[len(point) + 1:])
        if seed:
            with open(path) as f:
                done[int(seed.group(1))] = json.load(f)
    return done


def main(argv) -> int:
    if len(argv) < 3 or len(argv) % 2 == 0:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    folder, pairs = argv[0], list(zip(argv[1::2], argv[2::2]))
    if not os.path.isdir(os.path.join(folder, "points")):
        print(f"frontier_diff: DIR {folder!r} holds no points/ folder", file=sys.stderr)
        return 2
    for a, b in pairs:
        da, db = _load(folder, a), _load(folder, b)
        seeds = sorted(set(da) & set(db))
        if not seeds:
            print(f"frontier_diff: no seed is done for both {a!r} ({sorted(da)}) and {b!r} ({sorted(db)})", file=sys.stderr)
            return 2
        acc = [np.array([[c == "1" for c in d[s]["test_correct"]] for s in seeds], dtype=np.float64) for d in (da, db)]
        psnr = [np.array([d[s]["attacks"]["decoder"]["psnr"] for s in seeds], dtype=np.float64) for d in (da, db)]
        pa, pp = paired_difference(*acc), paired_difference(*psnr)
        print(f"{a} - {b} (seeds {','.join(map(str, seeds))}): accuracy {100 * pa['difference']:+.1f} "
              f"[{100 * pa['ci95'][0]:+.1f}, {100 * pa['ci95'][1]:+.1f}] points; decoder PSNR {pp['difference']:+.1f} "
              f"[{pp['ci95'][0]:+.1f}, {pp['ci95'][1]:+.1f}] dB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
