"""Several training seeds as one report entry: grouping, the two-level bootstrap, paired
differences against the undefended run, and pgsl evaluate's report of three seeds."""

import json

import numpy as np
import pytest

from pgsl.config import Config
from pgsl.evaluate import evaluate
from pgsl.evaluate.seeds import bootstrap_interval, group_runs, paired_difference, unpaired_difference
from pgsl.runs import restore
from pgsl.train import train


def test_bootstrap_interval_holds_the_mean_and_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    same = rng.normal(0.0, 1.0, (3, 200))
    low, high = bootstrap_interval(same)
    assert low < same.mean() < high and high - low < 0.5
    # the same images, but the seeds disagree: the interval must show it
    spread = same + np.array([[-2.0], [0.0], [2.0]])
    low2, high2 = bootstrap_interval(spread)
    assert high2 - low2 > 2 * (high - low)
    assert bootstrap_interval(np.full((3, 10), 0.25)) == [0.25, 0.25]
    with pytest.raises(ValueError, match="bootstrap_interval"):
        bootstrap_interval(np.zeros(5))


def test_paired_difference_pairs_images_and_says_what_is_significant():
    rng = np.random.default_rng(1)
    base = rng.normal(20.0, 5.0, (3, 64))  # per-image PSNR, widely spread
    shifted = base - 0.5  # every image 0.5 dB lower: unpaired this is lost in the spread
    d = paired_difference(shifted, base)
    assert d["difference"] == pytest.approx(-0.5) and d["significant"] and d["ci95"][1] < 0
    noise = paired_difference(base + rng.normal(0, 1, base.shape), base)
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and not noise["significant"]
    assert paired_difference(base[:2], base)["seeds"] == 2  # the first min(S) seeds
    with pytest.raises(ValueError, match="same images"):
        paired_difference(base[:, :10], base)


def test_unpaired_difference_pairs_seeds_but_not_images():
    rng = np.random.default_rng(2)
    shift = np.array([[-3.0], [0.0], [3.0]])  # a seed moves both sides alike
    a = 1.0 + shift + rng.normal(0, 0.5, (3, 40))
    b = shift + rng.normal(0, 0.5, (3, 100))  # another image set, of another size
    d = unpaired_difference(a, b)
    assert d["difference"] == pytest.approx(a.mean() - b.mean()) and d["seeds"] == 3
    assert d["significant"] and 0.7 < d["ci95"][0] < d["difference"] < d["ci95"][1] < 1.3
    # drawn apart, the seeds' shift would swamp the difference: paired, it cancels
    assert bootstrap_interval(a)[1] - bootstrap_interval(a)[0] > 2 * (d["ci95"][1] - d["ci95"][0])
    same = unpaired_difference(b[:, :50], b[:, 50:])
    assert same["ci95"][0] < 0 < same["ci95"][1] and not same["significant"]
    assert unpaired_difference(a[:1], b)["seeds"] == 1  # the first min(S) seeds
    with pytest.raises(ValueError, match="unpaired_difference"):
        unpaired_difference(a[0], b)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded")
    common = dict(epochs=1, batch_size=32, train_subset=128, eval_subset=48, progress=False)
    for seed in (0, 1, 2):
        train(Config(defense="none", seed=seed, out=str(root / f"none-s{seed}"), **common))
    for seed in (0, 1):
        train(Config(defense="noise", seed=seed, out=str(root / f"noise-s{seed}"), **common))
    return root


def test_runs_differing_only_in_seed_form_one_group(seeded):
    runs = [(n, restore(str(seeded / n))) for n in ("none-s0", "noise-s0", "none-s1", "noise-s1", "none-s2")]
    groups = group_runs(runs)
    assert list(groups) == ["none-s0", "noise-s0"]
    assert [m for m, _ in groups["none-s0"]] == ["none-s0@s0", "none-s0@s1", "none-s0@s2"]
    assert [r.cfg.seed for _, r in groups["noise-s0"]] == [0, 1]
    # the same seed twice is two entries, never pooled with itself
    again = group_runs([runs[0], ("copy", runs[0][1])])
    assert list(again) == ["none-s0", "copy"]


def test_report_pools_seeds_with_intervals_and_paired_differences(seeded, tmp_path):
    folders = [str(seeded / n) for n in ("none-s0", "none-s1", "none-s2", "noise-s0", "noise-s1")]
    out = tmp_path / "report"
    evaluate(folders, out=str(out), evaluations=["decoder", "fgsm"], images=6, robust_images=8, progress=False)
    report = json.loads((out / "report.json").read_text())
    assert list(report["runs"]) == ["none", "noise(1)"]
    assert report["runs"]["none"]["seeds"] == [0, 1, 2] and report["runs"]["noise(1)"]["seeds"] == [0, 1]
    per_seed = report["runs"]["none"]["test_accuracy_per_seed"]
    assert report["runs"]["none"]["test_accuracy"] == pytest.approx(sum(per_seed) / 3)
    # every seed was evaluated on its own, then pooled
    assert set(report["seed_runs"]["privacy"]) == {"none@s0", "none@s1", "none@s2", "noise(1)@s0", "noise(1)@s1"}
    members = [report["seed_runs"]["privacy"][f"none@s{s}"]["decoder"]["metrics_vs_clean"]["psnr"] for s in (0, 1, 2)]
    assert report["privacy"]["none"]["decoder"]["metrics_vs_clean"]["psnr"] == pytest.approx(sum(members) / 3)
    level = report["privacy"]["none"]["knowledge_levels"][0]
    assert level["psnr_vs_clean_ci95"][0] <= level["psnr_vs_clean"] <= level["psnr_vs_clean_ci95"][1] and level["seeds"] == 3
    fgsm = report["robustness"]["results"]["none"]["attacks"]["fgsm"]["adaptive"]
    assert len(fgsm["correct"]["plain"]) == 3 and len(fgsm["per_seed"]) == 3
    low, high = fgsm["accuracy_ci95"]["plain"]
    assert low <= fgsm["accuracy"]["plain"] <= high
    comparison = report["comparisons"]
    assert comparison["reference"] == "none" and list(comparison["runs"]) == ["noise(1)"]
    d = comparison["runs"]["noise(1)"]
    assert d["clean_accuracy"]["seeds"] == 2 and d["clean_accuracy"]["images"] == 8
    assert set(d["privacy"]) == {"query access + auxiliary images"}
    assert d["robustness"]["fgsm"]["adaptive"]["ci95"][0] <= d["robustness"]["fgsm"]["adaptive"]["difference"]
    md = (out / "report.md").read_text()
    assert "## Differences from the undefended run" in md and "| none | none | mnist5k | 1 | 0, 1, 2 |" in md


def test_robustness_resumes_at_the_next_run_and_crafts_transfer_images_once(seeded, tmp_path, monkeypatch):
    """Fifteen runs at 500 targets take hours: an interrupted evaluation must keep every run's
    robustness that finished, and the transfer images crafted against the undefended source."""
    from pgsl.evaluate import robustness

    folders = [str(seeded / n) for n in ("none-s0", "none-s1", "noise-s0")]
    kwargs = dict(evaluations=["fgsm"], images=4, robust_images=4, progress=False)
    real, calls = robustness.evaluate_robustness, []

    def second_call_interrupted(*a, **k):
        calls.append(sorted(a[0]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(robustness, "evaluate_robustness", second_call_interrupted)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        evaluate(folders, out=str(out), **kwargs)
    assert (out / "transfer_images.pt").is_file()
    kept = json.loads((out / "report.json").read_text())["seed_runs"]["robustness"]["results"]
    assert list(kept) == ["none@s0"]
    calls.clear()
    crafted, real_craft = [], robustness.craft
    monkeypatch.setattr(robustness, "evaluate_robustness", lambda *a, **k: calls.append(sorted(a[0])) or real(*a, **k))
    monkeypatch.setattr(robustness, "craft", lambda *a, **k: crafted.append(a[1]) or real_craft(*a, **k))
    report = evaluate(folders, out=str(out), resume=True, **kwargs)
    assert calls == [["none@s1"], ["noise(1)"]]  # a group of one seed: its member is the group
    # none@s1: transfer from none@s0 and adaptive; noise: adaptive only, its transfer images from
    # none@s0 were crafted for none@s1 (4 crafts without the cache)
    assert crafted == ["fgsm"] * 3
    assert set(report["robustness"]["results"]) == {"none", "noise(1)"}
