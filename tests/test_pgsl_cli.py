"""The pgsl command: --help lists every option; bad input ends with one line naming the option or
file (exit 2), never a traceback."""

import os
import subprocess
import sys

import pytest

from pgsl.cli import main
from pgsl.config import Config


def _pgsl_script():
    script = os.path.join(os.path.dirname(sys.executable), "pgsl")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "pgsl.cli"]


def test_console_script_help_lists_every_option():
    out = subprocess.run([*_pgsl_script(), "train", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for field in Config.__dataclass_fields__:
        if field in ("progress",):
            assert "--no-progress" in out.stdout
            continue
        assert "--" + field.replace("_", "-") in out.stdout, field
    top = subprocess.run([*_pgsl_script(), "--help"], capture_output=True, text=True, timeout=300)
    assert top.returncode == 0 and "train" in top.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--epochs", "abc"], "argument --epochs: expected an integer, got 'abc'"),
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (["--defense", "dp"], "argument --defense: invalid choice: 'dp'"),
        (["--fusion-weights", "1,2"], "argument --fusion-weights: expected three comma-separated numbers"),
        (["--data", "cifar10"], "--data: expected 'mnist5k', 'mnist:DIR', 'mias:DIR' or 'saved:FILE', got 'cifar10'"),
        (["--data", "mias:/nonexistent/folder"], "--data mias:/nonexistent/folder: no such directory"),
        (["--data", "mnist:/nonexistent/folder"], "--data mnist:/nonexistent/folder: no such directory"),
        (["--mu", "nan"], "--mu: expected a number > 0, got nan"),
        (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "--device"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, needle):
    try:
        code = main(["train", "--out", str(tmp_path / "run"), *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pgsl train: error:") or lines[0].startswith("pgsl: error:"), err
    assert needle in lines[0], err


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path):
    info = tmp_path / "mias"
    info.mkdir()
    (info / "Info.txt").write_text("mdb001 G NORM\nthis line is wrong\n")
    out = subprocess.run([*_pgsl_script(), "train", "--data", f"mias:{info}", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"pgsl train: error: {info}/Info.txt, line 2: expected 'REFNUM BG CLASS [SEVERITY [X Y RADIUS]]' "
        "(e.g. 'mdb001 G CIRC B 535 425 197'), got 'this line is wrong'"
    ]
