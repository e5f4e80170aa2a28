#!/usr/bin/env python
"""How much of the label each Table 2 attack row's perturbation carries (pgsl.table2.perturbation_probe).

    python scripts/table2_probe.py OUT.json TABLE2_FOLDER [TABLE2_FOLDER ...]

TABLE2_FOLDER: a sweep's DIR/table2 on the machine that built its units (their images.pt are not
committed). Writes OUT.json (one entry per attack row) and prints it as a Markdown table.
"""

import json
import os
import sys

from pgsl.errors import PgslError
from pgsl.table2 import perturbation_probe


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, folders = argv[0], argv[1:]
    missing = [f for f in folders if not os.path.isdir(f)]
    if missing:
        print(f"table2_probe: TABLE2_FOLDER {missing[0]!r} is not a folder", file=sys.stderr)
        return 2
    try:
        rows = perturbation_probe(folders)
    except (PgslError, FileNotFoundError, ValueError) as e:
        print(f"table2_probe: {e}", file=sys.stderr)
        return 1
    if not rows:
        print(f"table2_probe: no attack unit (<jsma|cw|bim|fgsm>-s<seed>/images.pt) under {folders}", file=sys.stderr)
        return 1
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
    print("| row | seeds | pixels changed | probe on the perturbation | on the clean images | on the attacked images |")
    print("| --- | --- | ---: | --- | --- | --- |")
    for r in rows:
        cells = [f"{r[k]:.1f} [{r[k + '_ci95'][0]:.1f}, {r[k + '_ci95'][1]:.1f}]" for k in ("perturbation", "clean", "attacked")]
        print(f"| {r['row']} | {', '.join(map(str, r['seeds']))} | {r['pixels_changed']:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
