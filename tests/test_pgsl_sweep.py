"""pgsl sweep (issue 19): the plan's checks, points, shards, resumability and the merge into the
frontier; and, end to end, the quick plan CI runs."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pgsl import sweep
from pgsl.errors import ConfigError, RunError
from pgsl.evaluate import inversion

PLAN = {
    "name": "t",
    "seeds": [0, 1],
    "train": {"epochs": 1, "train_subset": 64},
    "evaluate": {"attacks": ["decoder", "whitebox"], "images": 4},
    "defenses": [{"defense": "none"}, {"defense": "noise", "option": "noise_scale", "strengths": [0.5, 5]}],
}
LEVEL0, LEVEL2 = inversion.KNOWLEDGE_LEVELS[0], inversion.KNOWLEDGE_LEVELS[2]


def _plan(**changes):
    plan = copy.deepcopy(PLAN)
    plan.update(changes)
    return plan


@pytest.mark.parametrize("change, expected", [
    ({"colour": 1}, "unknown key(s) ['colour']"),
    ({"seeds": []}, "'seeds' must be a non-empty list of integers"),
    ({"seeds": [0, 0]}, "names a seed twice"),
    ({"train": {"seed": 3}}, "'train' sets 'seed', which the sweep sets"),
    ({"train": {"epoch": 3}}, "'train' has 'epoch', not a pgsl train option"),
    ({"evaluate": {"attacks": ["cw"]}}, "'evaluate.attacks' must be a non-empty list drawn from"),
    ({"evaluate": {"images": 0}}, "'evaluate.images' must be an integer >= 1"),
    ({"defenses": [{"defense": "noise", "option": "noise_scale", "strengths": [1]}]}, "needs the reference"),
    ({"defenses": [{"defense": "none"}, {"defense": "noise", "option": "noise_scale"}]}, "'option' and 'strengths' come together"),
    ({"defenses": [{"defense": "none"}, {"defense": "noise", "option": "noise_scale", "strengths": [-1]}]},
     "point noise-noise_scale--1-s0: --noise-scale: expected a number >= 0"),
    ({"defenses": [{"defense": "none"}, {"defense": "noise", "option": "nopeek_weight", "strengths": [2]}]},
     "--nopeek-weight: acts on --defense nopeek only"),
    ({"defenses": [{"defense": "none"}, {"defense": "pgsl", "option": "rpca_iters", "strengths": [2.5]}]},
     "--rpca-iters: expected an integer"),
    ({"defenses": [{"defense": "none"}, {"defense": "tls", "option": "x", "strengths": [1]}]}, "'defense' must be one of"),
])
def test_a_plan_that_cannot_run_is_refused_naming_the_entry(change, expected):
    with pytest.raises(ConfigError) as e:
        sweep.check_plan(_plan(**change))
    assert expected in str(e.value), e.value


def test_a_plan_file_is_named_in_its_errors(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"PLAN .*plan\.json: not valid JSON"):
        sweep.load_plan(str(path))
    with pytest.raises(ConfigError, match="no such file"):
        sweep.load_plan(str(tmp_path / "missing.json"))


def test_points_and_shards_cover_the_plan_once():
    pts = sweep.points(PLAN)
    assert [p.name for p in pts] == ["none-s0", "none-s1", "noise-noise_scale-0.5-s0", "noise-noise_scale-0.5-s1",
                                     "noise-noise_scale-5-s0", "noise-noise_scale-5-s1"]
    parts = [sweep.shard(pts, f"{k}/4") for k in range(1, 5)]
    assert sorted(p.name for part in parts for p in part) == sorted(p.name for p in pts)
    assert sweep.shard(pts, "2/4") == [pts[1], pts[5]]
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(ConfigError, match="--shard: expected K/N"):
            sweep.shard(pts, bad)


def test_train_options_reach_pgsl_train_as_flags():
    p = sweep.Point("pgsl", "rpca_iters", 40.0, 1)
    plan = _plan(defenses=[{"defense": "none"}, {"defense": "pgsl", "option": "rpca_iters", "strengths": [40],
                                                 "train": {"surrogate_epochs": 1}}])
    sweep.check_plan(plan)
    argv = sweep._train_argv(plan, p, "OUT")
    assert argv[argv.index("--surrogate-epochs") + 1] == "1" and argv[argv.index("--defense") + 1] == "pgsl"
    assert argv[:1] == ["train"] and "--rpca-iters" in argv and argv[argv.index("--rpca-iters") + 1] == "40"
    assert argv[argv.index("--seed") + 1] == "1" and argv[argv.index("--epochs") + 1] == "1"


def test_dcs_is_one_at_the_ideal_and_0_293_without_a_defence():
    kw = dict(reference_accuracy=0.95, reference_psnr=30.0, baseline_psnr=12.0)
    assert sweep.dcs(0.95, 30.0, **kw) == pytest.approx(1 - np.sqrt(0.5))
    assert sweep.dcs(0.95, 11.0, **kw) == pytest.approx(1.0)
    assert sweep.dcs(0.475, 21.0, **kw) == pytest.approx(1 - np.sqrt((0.25 + 0.25) / 2))


def _fake_point(out, plan, point, accuracy, psnr, *, spec=None):
    """A done point as _compute writes it, with chosen numbers (decoder = psnr, whitebox = psnr + 10)."""
    folder = os.path.join(out, "points", point.name)
    os.makedirs(folder, exist_ok=True)
    result = dict(spec=spec or sweep._spec(plan, point), defense=point.defense, option=point.option,
                  strength=point.strength, seed=point.seed, accuracy=accuracy,
                  attacks={"decoder": {"level": 0, "psnr": [psnr - 1, psnr + 1], "ssim": [0.5, 0.5]},
                           "whitebox": {"level": 2, "psnr": [psnr + 9, psnr + 11], "ssim": [0.9, 0.9]}},
                  baseline_psnr=[12.0, 12.0], seconds={"train": 1.0, "evaluate": 1.0})
    with open(os.path.join(folder, "point.json"), "w") as f:
        json.dump(result, f)


def test_merge_builds_the_frontier_from_the_points_that_exist(tmp_path):
    out = str(tmp_path)
    numbers = {"none": (0.95, 30.0), 0.5: (0.94, 25.0), 5.0: (0.60, 8.0)}
    for p in sweep.points(PLAN):
        if p.name == "noise-noise_scale-5-s1":
            continue  # not computed yet
        acc, psnr = numbers["none" if p.strength is None else p.strength]
        _fake_point(out, PLAN, p, acc + 0.01 * p.seed, psnr)
    other = sweep.Point("noise", "noise_scale", 5.0, 1)  # a leftover of another plan: not merged
    _fake_point(out, PLAN, other, 0.1, 1.0, spec={"something": "else"})
    summary = sweep.merge(PLAN, out)
    frontier = json.load(open(os.path.join(out, "frontier.json")))
    assert len(frontier) == 5 and summary["points"] == 5 and summary["of"] == 6
    point = next(f for f in frontier if f["strength"] == 0.5 and f["seed"] == 1)
    assert set(point) >= {"defense", "strength", "seed", "accuracy", "privacy"}
    assert point["accuracy"] == pytest.approx(0.95) and point["privacy"] == {LEVEL0: pytest.approx(25.0), LEVEL2: pytest.approx(35.0)}
    noise = next(c for c in summary["curves"] if c["defense"] == "noise")
    strong = next(r for r in noise["rows"] if r["strength"] == 5)
    assert strong["seeds"] == [0] and strong["accuracy_ci95"] is None
    decoder = next(lv for lv in strong["levels"] if lv["level"] == LEVEL0)
    assert decoder["below_mean_image"] and decoder["psnr"] == pytest.approx(8.0)
    # DCS at the decoder's level: MP = 0.60 / 0.955, AP = 0 (below the mean image)
    assert decoder["dcs"] == pytest.approx(1 - np.sqrt((1 - 0.60 / 0.955) ** 2 / 2))
    weak = next(r for r in noise["rows"] if r["strength"] == 0.5)
    assert weak["accuracy_ci95"][0] < 0.945 < weak["accuracy_ci95"][1]
    assert noise["reading"][LEVEL0]["private_strength"] == 5
    assert noise["reading"][LEVEL2]["private_strength"] is None  # the white box stays above the mean image
    assert os.path.getsize(os.path.join(out, "frontier.png")) > 10_000
    assert "below the mean image" in open(os.path.join(out, "frontier.md")).read()


def test_a_done_point_is_kept_an_interrupted_one_redone_a_held_one_left(tmp_path, monkeypatch):
    out = str(tmp_path)
    plan = _plan(defenses=[{"defense": "none"}], seeds=[0, 1, 2])
    calls = []

    def fake_run(argv, log, threads):  # what pgsl train / evaluate leave behind, without the compute
        calls.append(argv[0])
        if argv[0] == "evaluate":
            return
        os.makedirs(argv[argv.index("--out") + 1])

    monkeypatch.setattr(sweep, "_run_logged", fake_run)
    monkeypatch.setattr(sweep, "_summarise", lambda p, run, ev: {"accuracy": 0.9, "attacks": {
        "decoder": {"level": 0, "psnr": [20.0, 20.0], "ssim": [0.5, 0.5]},
        "whitebox": {"level": 2, "psnr": [30.0, 30.0], "ssim": [0.9, 0.9]}}, "baseline_psnr": [12.0, 12.0], "seconds": {}})
    p0, p1, p2 = sweep.points(plan)
    _fake_point(out, plan, p0, 0.9, 20.0)                                 # done
    os.makedirs(os.path.join(out, "points", p1.name, "run"))              # interrupted: a run without point.json
    open(os.path.join(out, "points", p1.name, "run", "partial"), "w").close()
    import fcntl

    held = open(os.path.join(out, "points", p2.name + ".lock"), "a")      # another process computes p2
    fcntl.flock(held, fcntl.LOCK_EX)
    summary = sweep.sweep(plan, out, progress=False)
    assert summary["counts"] == {"computed": 1, "done": 1, "held": 1, "failed": 0}
    assert calls == ["train", "evaluate"]
    assert not os.path.exists(os.path.join(out, "points", p1.name, "run", "partial"))
    fcntl.flock(held, fcntl.LOCK_UN)
    held.close()
    calls.clear()
    summary = sweep.sweep(plan, out, progress=False)
    assert summary["counts"] == {"computed": 1, "done": 2, "held": 0, "failed": 0} and calls == ["train", "evaluate"]
    with pytest.raises(ConfigError, match="holds the sweep of another plan"):
        sweep.sweep(_plan(name="other", defenses=[{"defense": "none"}]), out, progress=False)


def test_a_failed_point_is_named_and_the_others_are_merged(tmp_path, monkeypatch):
    out = str(tmp_path)
    plan = _plan(defenses=[{"defense": "none"}])

    def fail(argv, log, threads):
        raise RunError(f"pgsl train failed (exit 2): pgsl train: error: --data: bad (log: {log})")

    monkeypatch.setattr(sweep, "_run_logged", fail)
    _fake_point(out, plan, sweep.points(plan)[0], 0.9, 20.0)
    with pytest.raises(RunError, match=r"1 of 2 point\(s\) failed .*none-s1: pgsl train failed"):
        sweep.sweep(plan, out, progress=False)
    assert len(json.load(open(os.path.join(out, "frontier.json")))) == 1


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pgsl.cli", "sweep", *args], capture_output=True, text=True, cwd=cwd)


def test_the_command_line_refuses_bad_requests_in_one_line(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    for args, expected in [((str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")), "PLAN"),
                           ((str(plan), "--out", str(tmp_path / "o"), "--jobs", "0"), "--jobs: expected an integer >= 1"),
                           ((str(plan), "--out", str(tmp_path / "o"), "--shard", "5/4"), "--shard: expected K/N"),
                           (("--out", str(tmp_path / "o")), "one of the arguments")]:
        r = _cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("pgsl sweep: error:") and expected in r.stderr, r.stderr


def test_the_quick_plan_runs_end_to_end_and_a_second_call_only_merges(tmp_path):
    """What CI runs: every point of the quick plan trained and evaluated by the real commands."""
    out = str(tmp_path / "quick")
    r = _cli("--quick", "--out", out, "--jobs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    frontier = json.load(open(os.path.join(out, "frontier.json")))
    assert len(frontier) == len(sweep.points(sweep.QUICK_PLAN))
    for point in frontier:
        assert 0 <= point["accuracy"] <= 1 and set(point["privacy"]) == {LEVEL0, LEVEL2}
        assert all(np.isfinite(v) for v in point["privacy"].values())
    assert {(p["defense"], p["strength"]) for p in frontier} == {(p.defense, p.strength) for p in sweep.points(sweep.QUICK_PLAN)}
    for name in ("frontier.png", "frontier.md", "summary.json", "plan.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    table = {r["row"]: r for r in json.load(open(os.path.join(out, "table2.json")))}
    assert set(table) == {"jsma", "cw", "bim", "fgsm", "decoder", "dlg", "pgsl", "none"}
    for r in table.values():
        assert 0 <= r["ours"] <= 100 and set(r) >= {"row", "ours", "ours_ci95", "paper"}
    assert table["jsma"]["paper"] == 65.4 and table["pgsl"]["seeds"] == [0]
    stamps = {p: os.path.getmtime(os.path.join(out, "points", p, "point.json")) for p in os.listdir(os.path.join(out, "points"))
              if not p.endswith(".lock")}
    r = _cli("--quick", "--out", out, "--no-progress")
    from pgsl import table2

    done = len(frontier) + len(table2.units(sweep.QUICK_PLAN))
    assert r.returncode == 0 and f"{done} done;" in r.stdout, (r.stdout, r.stderr)
    assert stamps == {p: os.path.getmtime(os.path.join(out, "points", p, "point.json")) for p in stamps}


# --------------------------------------------------------------------------- Table 2

TABLE2 = {"train_images": 100, "test_images": 50, "sizes": {"dlg": {"train_images": 8, "test_images": 4}},
          "attacks": {"cw": {"steps": 5}}}


def _t2_plan(**table):
    return _plan(defenses=PLAN["defenses"] + [{"defense": "pgsl", "option": "jsma_gamma", "strengths": [0.1, 0.3]}],
                 table2=dict(TABLE2, **table))


@pytest.mark.parametrize("table, expected", [
    ({"rows": ["jsma", "pgsl"]}, "rows must list distinct rows drawn from"),
    ({"train_images": 0}, "train_images must be an integer >= 1"),
    ({"sizes": {"cw": {"train": 3}}}, "sizes['cw'] must be a row of 'rows'"),
    ({"attacks": {"cw": {"stepz": 5}}}, "unknown option(s) ['stepz']"),
    ({"attacks": {"dlg": {"batches": 5}}}, "reconstructs every image of the subset"),
    ({"colour": 1}, "unknown key(s) ['colour']"),
])
def test_a_table2_section_that_cannot_be_built_is_refused(table, expected):
    with pytest.raises(ConfigError) as e:
        sweep.check_plan(_t2_plan(**table))
    assert expected in str(e.value), e.value


def test_table2_needs_pgsl_points():
    with pytest.raises(ConfigError, match="its pgsl row comes from the plan's --defense pgsl points"):
        sweep.check_plan(_plan(table2=TABLE2))


def test_table2_units_per_seed_with_one_clean_control_per_size():
    from pgsl import table2

    names = [u.name for u in table2.units(_t2_plan())]
    assert names[:8] == ["jsma-s0", "cw-s0", "bim-s0", "fgsm-s0", "decoder-s0", "dlg-s0", "clean-100x50-s0", "clean-8x4-s0"]
    assert len(names) == 16 and table2.units(PLAN) == []
    argv = table2.train_argv(_t2_plan(), table2.units(_t2_plan())[0], "D.pt", "R")
    assert argv[argv.index("--data") + 1] == "saved:D.pt" and argv[argv.index("--defense") + 1] == "none"
    assert "--train-subset" not in argv and argv[argv.index("--epochs") + 1] == "1"


def test_table2_rows_with_the_paper_beside_ours(tmp_path):
    from pgsl import table2

    plan = _t2_plan()
    units = {}
    for u in table2.units(plan):
        acc = {"jsma": 0.5, "dlg": 0.25, "clean": 0.75}.get(u.row, 0.6)
        bits = "1" * int(acc * u.test_images) + "0" * (u.test_images - int(acc * u.test_images))
        units[u] = {"seed": u.seed, "accuracy": acc, "test_correct": bits}
    pgsl = [{"seed": s, "accuracy": 0.9, "test_correct": "1" * 9 + "0"} for s in (0, 1)]
    none = [{"seed": s, "accuracy": 0.95, "test_correct": None} for s in (0, 1)]
    rows, claims = table2.rows(plan, units, none, pgsl)
    by = {r["row"]: r for r in rows}
    assert [r["row"] for r in rows] == ["jsma", "cw", "bim", "fgsm", "decoder", "dlg", "pgsl", "none"]
    assert by["jsma"]["ours"] == pytest.approx(50.0) and by["jsma"]["paper"] == 65.4 and by["jsma"]["seeds"] == [0, 1]
    assert by["jsma"]["ours_ci95"][0] < 50 < by["jsma"]["ours_ci95"][1] and by["jsma"]["clean_same_size"] == pytest.approx(75.0)
    assert by["dlg"]["train_images"] == 8 and by["dlg"]["paper"] == 88.3 and by["decoder"]["paper"] is None
    assert by["pgsl"]["ours"] == pytest.approx(90.0) and by["none"]["ours_ci95"] is None
    # each row beside its clean control, paired by seed and image (25 of 50 right against 37 of 50)
    assert by["jsma"]["minus_clean"]["difference"] == pytest.approx(-24.0) and by["jsma"]["minus_clean"]["significant"]
    assert by["jsma"]["minus_clean"]["ci95"][1] < 0 and by["pgsl"].get("minus_clean") is None
    jsma = claims["pgsl_minus_jsma"]
    assert jsma["ours"] == pytest.approx(40.0) and jsma["paper_mias"] == 36.9 and jsma["seeds"] == [0, 1]
    assert 0 < jsma["ci95"][0] < 40 < jsma["ci95"][1]
    assert claims["pgsl_minus_dlg"]["ours"] == pytest.approx(65.0)
    # a claim holds only the seeds both sides have
    _, claims = table2.rows(plan, units, none, pgsl[:1])
    assert claims["pgsl_minus_jsma"]["seeds"] == [0] and claims["pgsl_minus_jsma"]["ours"] == pytest.approx(40.0)


def test_a_table2_unit_whose_undefended_point_was_computed_elsewhere_trains_it_again(tmp_path, monkeypatch):
    """A sweep kept in git holds each point's point.json only: a Table 2 unit must not read a
    run folder that is not there, but train the undefended model again inside the unit."""
    from pgsl import table2

    out, plan = str(tmp_path), _t2_plan()
    sweep._write_plan(plan, out)
    unit = table2.units(plan)[0]
    source = sweep.Point("none", None, None, unit.seed)
    _fake_point(out, plan, source, 0.95, 30.0)  # done, but no run beside its point.json
    calls = []

    def fake_run(argv, log, threads):
        calls.append(argv)
        if argv[0] == "train":
            target = argv[argv.index("--out") + 1]
            os.makedirs(target)
            with open(os.path.join(target, "metrics.json"), "w") as f:
                json.dump({"test_accuracy": 0.5, "test_correct": "10"}, f)

    monkeypatch.setattr(sweep, "_run_logged", fake_run)
    assert sweep._compute_unit(plan, unit, out, 1) == "computed"
    folder = os.path.join(out, "table2", unit.name)
    retrain, craft, train = calls
    assert retrain[0] == "train" and retrain[retrain.index("--out") + 1] == os.path.join(folder, "source")
    assert retrain[retrain.index("--defense") + 1] == "none" and retrain[retrain.index("--seed") + 1] == str(unit.seed)
    assert craft[:2] == ["-m", "pgsl.table2"] and craft[3] == os.path.join(folder, "source")
    assert train[0] == "train"
    done = json.load(open(os.path.join(folder, "point.json")))
    assert done["source"].startswith("the undefended point's training, run again")
    # with the undefended point's run present, the unit uses it
    calls.clear()
    os.makedirs(os.path.join(out, "points", source.name, "run"))
    with open(os.path.join(out, "points", source.name, "run", "metrics.json"), "w") as f:
        json.dump({"test_accuracy": 0.95}, f)
    other = table2.units(plan)[1]
    assert sweep._compute_unit(plan, other, out, 1) == "computed"
    assert [c[0] for c in calls] == ["-m", "train"] and calls[0][3] == os.path.join(out, "points", source.name, "run")


def test_a_saved_dataset_round_trips_and_a_bad_one_is_named(tmp_path):
    import torch
    from pgsl import data
    from pgsl.errors import DataError

    split = lambda n: data.Split(torch.rand(n, 1, 12, 12), torch.randint(0, 3, (n,)))  # noqa: E731
    ds = data.Dataset("toy", ["a", "b", "c"], split(5), split(2), split(3), ["made here"])
    path = str(tmp_path / "d.pt")
    data.save(ds, path)
    back = data.load(f"saved:{path}")
    assert back.classes == ["a", "b", "c"] and torch.equal(back.test.x, ds.test.x) and torch.equal(back.train.y, ds.train.y)
    bad = dict(torch.load(path, weights_only=True), test_x=torch.full((3, 1, 12, 12), 2.0))
    torch.save(bad, path)
    with pytest.raises(DataError, match=r"saved:.*d\.pt: split 'test' has pixels outside \[0, 1\]"):
        data.load(f"saved:{path}")
    with pytest.raises(DataError, match="no such file"):
        data.load(f"saved:{tmp_path / 'none.pt'}")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(DataError, match="not a dataset saved by pgsl"):
        data.load(f"saved:{tmp_path / 'junk.pt'}")


def test_perturbation_probe_reads_the_label_only_where_the_perturbation_carries_it(tmp_path):
    """A perturbation that lights one pixel per class gives the label away; one drawn without the
    label does not (the probe is at chance on it), though the clean images beneath carry it."""
    from pgsl import data as data_mod
    from pgsl import table2

    g = torch.Generator().manual_seed(0)
    classes = [str(i) for i in range(10)]

    def split(n):  # the label written in the clean image too: pixel 100 + y (row-major) lit
        x, y = torch.rand(n, 1, 12, 12, generator=g) * 0.5, torch.randint(0, 10, (n,), generator=g)
        x.view(n, -1)[torch.arange(n), 100 + y] = 1.0
        return data_mod.Split(x, y)

    train, val, test = split(300), split(20), split(200)
    folder = tmp_path / "table2"

    def save(name, tr, te):
        os.makedirs(folder / name)
        data_mod.save(data_mod.Dataset(name, classes, data_mod.Split(tr, train.y), val, data_mod.Split(te, test.y), []),
                      str(folder / name / "images.pt"))

    def mark(s):  # the y-th pixel (row-major) set to 1: the label, in the perturbation
        x = s.x.clone()
        x.view(len(x), -1)[torch.arange(len(x)), s.y] = 1.0
        return x

    def noise(s):
        return (s.x + 0.3 * torch.randn(s.x.shape, generator=g)).clamp(0, 1)

    save("clean-300x200-s0", train.x, test.x)
    save("jsma-s0", mark(train), mark(test))
    save("fgsm-s0", noise(train), noise(test))
    rows = {r["row"]: r for r in table2.perturbation_probe([str(folder)])}
    assert set(rows) == {"jsma", "fgsm"} and rows["jsma"]["seeds"] == [0]
    assert rows["jsma"]["perturbation"] > 95 and rows["jsma"]["pixels_changed"] == pytest.approx(1.0, abs=0.1)
    assert rows["fgsm"]["perturbation"] < 25 and rows["fgsm"]["pixels_changed"] > 30
    assert rows["fgsm"]["clean"] > 95 and rows["fgsm"]["attacked"] > 40  # the label is in the images (chance: 10), not the noise
    lo, hi = rows["jsma"]["perturbation_ci95"]
    assert lo <= rows["jsma"]["perturbation"] <= hi
    os.remove(folder / "clean-300x200-s0" / "images.pt")
    with pytest.raises(FileNotFoundError, match="no clean control clean-300x200-s0"):
        table2.perturbation_probe([str(folder)])


def test_frontier_diff_pairs_points_by_seed_and_image(tmp_path):
    """scripts/frontier_diff.py: A minus B on the seeds both hold, per image, with named errors."""
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "frontier_diff.py")

    def point(name, seed, correct, psnr):
        folder = tmp_path / "points" / f"{name}-s{seed}"
        folder.mkdir(parents=True)
        (folder / "point.json").write_text(json.dumps({"test_correct": correct, "attacks": {"decoder": {"psnr": psnr}}}))

    for seed in (0, 1):  # A: 3 of 4 right, decoder 20 dB; B: 1 of 4 right, decoder 25 dB
        point("a", seed, "1101", [20.0, 20.0])
        point("b", seed, "0100", [25.0, 25.0])
    point("a", 2, "0000", [0.0, 0.0])  # a seed B lacks: left out
    point("ab", 0, "1111", [99.0, 99.0])  # a name that starts with "a": not one of a's seeds
    run = lambda *args: subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    done = run(str(tmp_path), "a", "b")
    assert done.returncode == 0, done.stderr
    from pgsl.evaluate.seeds import paired_difference
    ci = paired_difference(np.array([[1.0, 0, 0, 1]] * 2), np.zeros((2, 4)))["ci95"]  # per image: A minus B
    assert done.stdout.strip() == (f"a - b (seeds 0,1): accuracy +50.0 [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points; "
                                   "decoder PSNR -5.0 [-5.0, -5.0] dB")
    missing = run(str(tmp_path), "a", "nope")
    assert missing.returncode == 2 and "no seed is done for both 'a' ([0, 1, 2]) and 'nope' ([])" in missing.stderr
    assert "holds no points/ folder" in run(str(tmp_path / "nowhere"), "a", "b").stderr
