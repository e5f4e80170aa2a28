"""The trainer, the CLI and the evaluation against a hostile environment (issue 22's findings):
each test is one finding's reproducer. Bad options and files end in one line naming them,
nothing is written before everything is checked, no kill point makes --resume fail or report
another result, and state files are checked for structure, provenance and sanity."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import pgsl_ext.ops
from pgsl import rundir
from pgsl.cli import main
from pgsl.config import Config
from pgsl.errors import ConfigError, RunError
from pgsl.evaluate import evaluate
from pgsl.runs import restore
from pgsl.train import train

SMALL = ["--defense", "none", "--train-subset", "64", "--eval-subset", "32", "--epochs", "1", "--batch-size", "32", "--no-progress"]


def tiny(out, **kw) -> Config:
    base = dict(out=str(out), defense="none", epochs=1, batch_size=32, train_subset=64, eval_subset=32, progress=False)
    base.update(kw)
    return Config(**base)


def one_line_error(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, lines)
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(out))
    return out


def copy_of(finished, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(finished, target, ignore=shutil.ignore_patterns(".lock"))
    return target


# --------------------------------------------------------------------------- options (19, 7, 13, 16, 17)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(clients=2.5), "--clients: expected an integer, got 2.5"),
        (dict(batch_size=2.5), "--batch-size: expected an integer"),
        (dict(seed=2**70), "--seed: expected an integer from 0 to 4294967295"),
        (dict(defense="pgsl", rpca_iters=10**20), "--rpca-iters: expected an integer from 1 to 2147483647"),
        (dict(defense="pgsl", fusion_weights=(1e308, 1e308, 1e308)), "--fusion-weights: expected three finite weights"),
        (dict(defense="pgsl", fusion_weights=(float("inf"), 1.0, 1.0)), "--fusion-weights: expected three finite weights"),
        (dict(timeout=0.3), "--timeout: expected a number of seconds from 2"),
        (dict(timeout=1e15), "--timeout: expected a number of seconds from 2"),
        (dict(mias_size=10), "--mias-size: expected an even size from 12"),
        (dict(mu=0.3), "--mu: acts on --defense pgsl or pgsl+noise only"),
        (dict(noise_scale=3.0), "--noise-scale: acts on --defense noise or pgsl+noise only"),
        (dict(out=""), "--out: expected a folder name"),
        (dict(progress=1), "--no-progress: expected true or false"),
    ],
)
def test_every_option_is_checked_in_type_and_range(tmp_path, kw, needle):
    kw = dict(kw)
    cfg = tiny(kw.pop("out", tmp_path / "run"), **kw)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        train(cfg)
    assert not (tmp_path / "run").exists(), "a refused command wrote into --out"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--fusion-weights", "inf,1,1"], "--fusion-weights"),
        (["--seed", "99999999999999999999"], "--seed: expected an integer from 0"),
        (["--timeout", "0.3"], "--timeout"),
        (["--mu", "0.3"], "--mu: acts on --defense pgsl or pgsl+noise only"),
        (["--data", "mnist:/no/such/dir"], "--data mnist:/no/such/dir: no such directory"),
    ],
)
def test_a_refused_command_is_one_line_and_changes_nothing_on_disk(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", *SMALL, "--out", str(out), *args])
    assert needle in line and line.startswith("pgsl train: error:")
    assert not out.exists()


# --------------------------------------------------------------------------- the run folder (3, 4, 11)


def test_out_that_is_a_file_or_under_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("not a folder")
    assert "is a file" in one_line_error(capsys, ["train", *SMALL, "--out", str(f)])
    assert "cannot be created" in one_line_error(capsys, ["train", *SMALL, "--out", str(f / "run")])
    assert f.read_text() == "not a folder"
    assert "is a file" in one_line_error(capsys, ["evaluate", "--run", str(tmp_path), "--out", str(f)])


def test_a_folder_that_is_not_empty_or_not_a_run_is_refused(tmp_path, finished):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "config.json").write_text('{"mine": 1}')
    with pytest.raises(RunError, match="not empty .*config.json"):
        train(tiny(other))
    assert (other / "config.json").read_text() == '{"mine": 1}'
    with pytest.raises(RunError, match="--resume: .* holds no run"):
        train(tiny(tmp_path / "mistyped", resume=True))
    run = copy_of(finished, tmp_path)
    before = (run / "config.json").read_text()
    with pytest.raises(RunError, match="--resume: --seed is 1"):
        train(tiny(run, seed=1, resume=True))
    train(tiny(run, resume=True))  # --epochs 1 again: nothing to do, config.json untouched
    assert (run / "config.json").read_text() == before


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from pgsl import rundir; rundir.lock({str(out)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"another pgsl train \\(pid {holder.pid}\\) is writing"):
            train(tiny(out))
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- kill points and state (5, 6, 9, 10, 12, 14)


def test_resume_after_a_kill_between_the_checkpoint_and_metrics_json(tmp_path, finished):
    run = copy_of(finished, tmp_path)
    want = json.loads((run / "metrics.json").read_text())
    os.remove(run / "metrics.json")  # killed after client_epoch1.pt and client.json, before metrics.json
    got = train(tiny(run, resume=True))
    assert got["test_accuracy"] == want["test_accuracy"] and got["history"] == want["history"]
    two = tmp_path / "two"
    full = train(tiny(two, epochs=2))
    stale = dict(full, history=full["history"][:1], test_accuracy=full["history"][0]["test_accuracy"], epochs=1)
    (two / "metrics.json").write_text(json.dumps(stale))  # epoch 2 checkpointed, metrics still at epoch 1
    again = train(tiny(two, epochs=2, resume=True))
    assert again["epochs"] == 2 and again["test_accuracy"] == full["test_accuracy"]


@pytest.mark.parametrize("content", ['{"epoch": -3}', '{"epoch": "2"}', "[1]", "{not json"])
def test_a_corrupt_marker_is_refused(tmp_path, finished, content):
    run = copy_of(finished, tmp_path)
    (run / "client.json").write_text(content)
    with pytest.raises(RunError, match="client.json"):
        train(tiny(run, epochs=2, resume=True))


def test_another_runs_checkpoint_is_refused(tmp_path, finished):
    run = copy_of(finished, tmp_path)
    other = tmp_path / "other"
    train(tiny(other))
    shutil.copy(other / "client_epoch1.pt", run / "client_epoch1.pt")
    with pytest.raises(RunError, match="client_epoch1.pt: belongs to another run"):
        train(tiny(run, epochs=2, resume=True))


def test_a_checkpoint_of_the_wrong_structure_or_truncated_is_refused(tmp_path, finished):
    run = copy_of(finished, tmp_path)
    torch.save({"something": 1}, run / "server_epoch1.pt")
    with pytest.raises(RunError, match="server_epoch1.pt: not the server half of epoch 1"):
        train(tiny(run, epochs=2, resume=True))
    data = (finished / "server_epoch1.pt").read_bytes()
    (run / "server_epoch1.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="server_epoch1.pt: cannot be loaded as a checkpoint"):
        train(tiny(run, epochs=2, resume=True))


def test_non_finite_weights_in_a_checkpoint_stop_the_resume(tmp_path, finished):
    run = copy_of(finished, tmp_path)
    state = torch.load(run / "client_epoch1.pt", weights_only=True)
    next(iter(state["client"]["net"].values())).fill_(float("nan"))
    torch.save(state, run / "client_epoch1.pt")
    with pytest.raises(RunError, match="non-finite weights"):
        train(tiny(run, epochs=2, resume=True))


def test_a_diverging_run_stops_with_a_clear_error_before_replacing_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError, match="training diverged .*--lr"):
        train(tiny(out, lr=1e30))
    assert not (out / "client_epoch1.pt").exists() and not (out / "metrics.json").exists()


def test_a_failed_checkpoint_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def disk_full(obj, path, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(rundir.torch, "save", disk_full)
    with pytest.raises(RunError, match="server_epoch1.pt: cannot be written .*disk full"):
        train(tiny(out))
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_corrupt_or_foreign_run_files_at_evaluate(tmp_path, finished, capsys):
    run = copy_of(finished, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["epochs"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="metrics.json: not a pgsl train metrics file \\(no epochs\\)"):
        restore(str(run))
    run = copy_of(finished, tmp_path, "typed")
    config = json.loads((run / "config.json").read_text())
    config["epochs"] = "two"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="config.json: not a valid pgsl train config .*--epochs: expected an integer"):
        restore(str(run))
    (run / "config.json").write_text("{not json")
    assert "config.json: cannot be read" in one_line_error(capsys, ["evaluate", "--run", str(run), "--out", str(tmp_path / "o")])


def test_restore_names_a_bad_device(finished):
    with pytest.raises(RunError, match="device: --device: expected cpu or cuda, got 'bogus'"):
        restore(str(finished), device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="no CUDA device is visible"):
            restore(str(finished), device="cuda")


# --------------------------------------------------------------------------- the launcher (15, 18)


def test_too_many_clients_are_refused_before_any_process_starts(tmp_path, capsys, monkeypatch):
    import pgsl.train as train_module

    started = []
    monkeypatch.setattr(train_module.subprocess, "Popen", lambda *a, **k: started.append(a))
    line = one_line_error(capsys, ["train", *SMALL, "--train-subset", "4", "--clients", "5", "--distributed", "--out", str(tmp_path / "run")])
    assert "--clients 5: client 1 gets 1 training images; it needs at least 2" in line
    assert started == [] and not (tmp_path / "run").exists()


def test_the_launcher_starts_its_ranks_with_the_arguments_it_was_given(tmp_path, monkeypatch):
    import pgsl.train as train_module

    calls = []

    class Done:
        def __init__(self, args, **kwargs):
            calls.append((args, kwargs))

        def poll(self):
            return 0

    monkeypatch.setattr(train_module.subprocess, "Popen", Done)
    monkeypatch.setattr(sys, "argv", ["host-script.py", "--unrelated"])
    argv = ["train", *SMALL, "--clients", "1", "--distributed", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert [c[0][3:] for c in calls] == [argv, argv]  # python -m pgsl.cli ARGV, for the server and the client
    assert all(c[1]["preexec_fn"] is train_module._die_with_parent for c in calls)


# --------------------------------------------------------------------------- the evaluation (2, 17, 19)


def test_evaluate_refuses_empty_or_mistyped_requests(finished, tmp_path):
    out = str(tmp_path / "o")
    for kwargs, needle in [
        (dict(evaluations=""), "--attacks: expected some of"),
        (dict(evaluations=",,,"), "--attacks: expected some of"),
        (dict(evaluations=["musweep"]), "musweep: the mu sweep needs a --defense pgsl run"),
        (dict(images=2.5), "--images: expected an integer >= 1, got 2.5"),
        (dict(seed=2**70), "--seed: expected an integer from 0"),
    ]:
        with pytest.raises(RunError, match=needle):
            evaluate(str(finished), out=out, progress=False, **kwargs)
    assert not os.path.exists(out)


def test_the_default_evaluations_are_those_that_apply_to_the_runs(finished):
    # without --attacks, a report of baselines only (no pgsl run) leaves out rpca's mu sweep
    # instead of refusing the whole evaluation; asked for by name, it is still refused (above)
    from types import SimpleNamespace

    from pgsl.evaluate.report import EVALUATIONS, default_evaluations

    baseline = restore(str(finished))
    assert baseline.defense == "none"
    assert default_evaluations([baseline]) == [e for e in EVALUATIONS if e != "musweep"]
    for defense in ("pgsl", "pgsl+noise"):
        assert default_evaluations([baseline, SimpleNamespace(defense=defense)]) == list(EVALUATIONS)
    # the command line's default is that list, not the whole registry
    import argparse

    from pgsl.evaluate.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--run", str(finished)]).attacks is None


def test_an_interrupted_evaluation_keeps_what_finished_and_resumes_to_the_same_report(finished, tmp_path, monkeypatch):
    from pgsl.evaluate import robustness

    kwargs = dict(evaluations=["decoder", "fgsm"], images=4, robust_images=4, progress=False)
    whole = evaluate(str(finished), out=str(tmp_path / "whole"), **kwargs)
    real = robustness.evaluate_robustness

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(robustness, "evaluate_robustness", interrupted)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        evaluate(str(finished), out=str(out), **kwargs)
    report = json.loads((out / "report.json").read_text())
    assert report["privacy"]["none"]["decoder"]["metrics_vs_clean"]["psnr"] > 0 and "robustness" not in report
    computed = []
    monkeypatch.setattr(robustness, "evaluate_robustness", lambda *a, **k: computed.append(1) or real(*a, **k))
    monkeypatch.setattr("pgsl.evaluate.inversion.evaluate_privacy", lambda *a, **k: pytest.fail("privacy recomputed"))
    resumed = evaluate(str(finished), out=str(out), resume=True, **kwargs)
    assert computed == [1]
    def numbers(part):  # everything but the times
        if isinstance(part, dict):
            return {k: numbers(v) for k, v in part.items() if k not in ("seconds", "cpu_seconds")}
        return [numbers(v) for v in part] if isinstance(part, list) else part

    for part in ("privacy", "robustness"):
        assert json.dumps(numbers(resumed[part]), sort_keys=True, default=str) == json.dumps(numbers(whole[part]), sort_keys=True, default=str)
    with pytest.raises(RunError, match="--resume: .* has inversion_images 4, this evaluation 3"):
        evaluate(str(finished), out=str(out), resume=True, **dict(kwargs, images=3))


# --------------------------------------------------------------------------- the library (19)


def test_rpca_names_an_iteration_cap_beyond_64_bits():
    with pytest.raises(ValueError, match="rpca: expected `max_iter` to fit in 64 bits"):
        pgsl_ext.ops.rpca(torch.rand(2, 4, 4), max_iter=10**20)


def test_negative_fusion_weights_reach_their_check(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--fusion-weights", "-1,1,1", "--out", str(tmp_path / "run")])
    assert "--fusion-weights: expected three finite weights >= 0" in line and "(-1.0, 1.0, 1.0)" in line


def test_a_text_pixel_in_an_ascii_pgm_names_the_file(tmp_path):
    from pgsl.data import DataError, read_pgm

    path = tmp_path / "mdb001.pgm"
    path.write_text("P2\n2 2\n255\n0 12 x7 255\n")
    with pytest.raises(DataError, match=r"mdb001.pgm: pixel value b'x7' is not an integer"):
        read_pgm(str(path))


def test_launcher_exit_status_follows_the_shell_for_signals():
    """Issue 22, finding 20: a rank killed by a signal made the launcher exit 247 / 250."""
    from pgsl.train import exit_status

    assert exit_status(-9) == 137 and exit_status(-6) == 134 and exit_status(2) == 2 and exit_status(0) == 0


class _Payload:
    """Pickles to a call of ``touch`` on a marker file: what a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_in_one_line_without_running_it(tmp_path, finished, capsys):
    """Issue 22, findings 14 and 20: refused (weights_only) in one line, without torch's advice to
    retry with weights_only=False, which would run the payload."""
    run = copy_of(finished, tmp_path)
    marker = tmp_path / "ran"
    torch.save({"net": _Payload(marker)}, run / "client_epoch1.pt")
    line = one_line_error(capsys, ["evaluate", "--run", str(run), "--attacks", "decoder", "--out", str(tmp_path / "o")])
    assert "client_epoch1.pt: cannot be loaded as a checkpoint" in line and "refused without running" in line
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    torch.save({"x": _Payload(marker)}, run / "client1_attack.pt")
    with pytest.raises(RunError, match="client1_attack.pt: cannot be loaded as the client's attack cache .*refused without running"):
        from pgsl.rundir import load_cache

        load_cache(str(run / "client1_attack.pt"))
    assert not marker.exists()


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only filesystem (a tmpfs mounted ro): root ignores permission bits, not this."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_out_on_a_read_only_filesystem_is_one_line(read_only_folder, finished, capsys):
    """Issue 22, finding 11: --out on a read-only filesystem (train and evaluate)."""
    line = one_line_error(capsys, ["train", "--defense", "none", "--out", str(read_only_folder / "run"), "--no-progress"])
    assert "--out" in line and "Read-only file system" in line
    line = one_line_error(capsys, ["evaluate", "--run", str(finished), "--attacks", "decoder", "--out", str(read_only_folder / "ev")])
    assert "--out" in line and "Read-only file system" in line
