"""Study aggregation: the seed statistics against scipy, then a synthetic study directory → results.csv / .md /
.tex, plots and the report, every number checked against a recomputation here."""
import csv
import json
import math
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import stats as scipy_stats

from seg_jax.studies import aggregate, load, report, stats
from seg_jax.studies.spec import StudyError
from seg_jax.studies.tables import number

COLUMNS = ["arm", "metric", "n", "mean", "std", "ci95_low", "ci95_high", "diff_mean", "diff_ci95_low",
           "diff_ci95_high", "p_value"]
X = [0.491, 0.503, 0.478, 0.512, 0.495]


# ----------------------------------------------------------------------------------------------------- stats
def test_summarize_matches_numpy_and_scipy():
    s = stats.summarize(X)
    half = scipy_stats.t.ppf(0.975, len(X) - 1) * np.std(X, ddof=1) / math.sqrt(len(X))
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(np.mean(X), rel=1e-14)
    assert s["std"] == pytest.approx(np.std(X, ddof=1), rel=1e-14)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((np.mean(X) - half, np.mean(X) + half), rel=1e-14)
    low, high = scipy_stats.t.interval(0.95, len(X) - 1, loc=np.mean(X), scale=scipy_stats.sem(X))
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((low, high), rel=1e-12)


def test_summarize_small_cases_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no degrees-of-freedom or divide warnings
        empty, one, two, same = (stats.summarize(v) for v in ([], [0.7], [1.0, 3.0], [0.5, 0.5, 0.5]))
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "std", "ci95_low", "ci95_high"))
    assert one["n"] == 1 and one["mean"] == 0.7
    assert all(math.isnan(one[k]) for k in ("std", "ci95_low", "ci95_high"))
    # n = 2: std = √2, half width = t_{0.975, 1} · √2 / √2 = 12.7062…
    assert two["std"] == pytest.approx(math.sqrt(2))
    assert (two["ci95_low"], two["ci95_high"]) == pytest.approx((2 - 12.706204736, 2 + 12.706204736))
    assert same["std"] == 0.0 and same["ci95_low"] == same["ci95_high"] == 0.5
    assert math.isnan(stats.summarize([0.5, float("nan")])["mean"])  # NaN is not dropped silently


def test_paired_matches_ttest_rel_and_pairs_by_seed():
    arm = {0: 0.52, 1: 0.55, 2: 0.50, 3: 0.58, 7: 0.9}  # seed 7 has no baseline partner
    base = {3: 0.51, 2: 0.49, 1: 0.50, 0: 0.50, 5: 0.1}  # seed 5 has no arm partner; other order
    seeds = [0, 1, 2, 3]
    a, b = np.array([arm[s] for s in seeds]), np.array([base[s] for s in seeds])
    p = stats.paired(arm, base)
    d = a - b
    half = scipy_stats.t.ppf(0.975, 3) * np.std(d, ddof=1) / 2
    assert p["n"] == 4
    assert p["diff_mean"] == pytest.approx(d.mean(), rel=1e-13)
    assert (p["diff_ci95_low"], p["diff_ci95_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    assert p["p_value"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-10)


def test_paired_degenerate_cases_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = stats.paired({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
        constant = stats.paired({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 3.0})
        single = stats.paired({0: 0.6, 1: 0.7}, {0: 0.5})
        none = stats.paired({0: 0.6}, {1: 0.5})
    assert zero["diff_mean"] == 0.0 and math.isnan(zero["p_value"])  # as ttest_rel: 0/0
    assert constant["diff_mean"] == 1.0 and constant["p_value"] == 0.0  # as ttest_rel: infinite t
    assert constant["diff_ci95_low"] == constant["diff_ci95_high"] == 1.0
    assert single["n"] == 1 and single["diff_mean"] == pytest.approx(0.1)
    assert math.isnan(single["p_value"]) and math.isnan(single["diff_ci95_low"])
    assert none["n"] == 0 and math.isnan(none["diff_mean"])


# ----------------------------------------------------------------------------------------------------- a study
ARMS = {"ce": {"loss": {"cross_entropy": 1.0}}, "ce_dice": {"loss": {"cross_entropy": 1.0, "dice": 1.0}},
        "weighted": {"class_weights": "median_frequency"}}
CLASSES = ("background", "disc", "bar")
MIOU = {"ce": [0.49, 0.50, 0.47], "ce_dice": [0.53, None, 0.52], "weighted": [0.51, 0.48, None]}


def _scalars(arm, seed):
    miou = MIOU[arm][seed]
    out = {"val/mean_iou": miou, "val/boundary_accuracy": 0.8 + 0.01 * seed + (0.02 if arm == "ce_dice" else 0),
           "val/num_images": 200.0, "val/pixel_accuracy": 0.93}
    for i, cls in enumerate(CLASSES):
        out[f"val/iou/{cls}"] = round(0.9 - 0.4 * i + 0.01 * seed, 6)
        out[f"val/dice/{cls}"] = 0.5
    return out


def _config(arm, seed, *, data_dir):
    return {"name": f"imbalance_{arm}_seed{seed}", "seed": seed, "data": {"data_dir": data_dir, "name": "shapes"},
            "loss": ARMS[arm].get("loss", {"cross_entropy": 1.0}),
            "class_weights": ARMS[arm].get("class_weights"), "train": {"steps": 20}}


DEFINITIONS = {"val": {"mean_iou": "IoU per class from ONE confusion matrix, then the mean",
                       "boundary_accuracy": "pixel accuracy within 3 px of a label change",
                       "pixel_accuracy": "not reported by this study",
                       "iou/<class>, dice/<class>": "per-class IoU and Dice",
                       "absent_classes": "an absent class has no IoU (NaN)"}}


def _write_run(directory, arm, seed, *, truncate=False, drift=False):
    directory.mkdir(parents=True)
    config = _config(arm, seed, data_dir=f"/data/{seed}")
    if drift:  # this seed was trained with another learning rate than its arm's other seeds
        config["optimizer"] = {"learning_rate": 0.01}
    (directory / "config.json").write_text(json.dumps(config))
    lines = []
    for step in (10, 20):
        lines.append(json.dumps({"step": step, "group": "train", "train/loss": 1.0 / step + 0.01 * seed,
                                 "train/learning_rate": 0.003}))
        lines.append(json.dumps({"step": step, "group": "val", "val/mean_iou": 0.4 + step / 100 + 0.01 * seed}))
    text = "\n".join(lines) + "\n" + ('{"step": 30, "group": "tr' if truncate else "")
    (directory / "metrics.jsonl").write_text(text)
    commit = {"commit": "def5678"} if arm == "ce" else {}  # older runs recorded no commit
    (directory / "results.json").write_text(json.dumps(
        {"step": 20, **commit, "scalars": _scalars(arm, seed), "definitions": DEFINITIONS}))


@pytest.fixture
def study_dir(tmp_path):
    root = tmp_path / "runs" / "studies" / "imbalance"
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({
        "name": "imbalance", "description": "Does Dice help the thin class?", "base": "experiments/default.py",
        "arms": ARMS, "seeds": [0, 1, 2], "metrics": ["val/mean_iou", "val/boundary_accuracy"],
        "per_class": ["val/iou"], "baseline": "ce", "curve_metric": "val/mean_iou", "commit": "abc1234"}))
    for arm, values in MIOU.items():
        for seed, value in enumerate(values):
            if value is not None:
                _write_run(root / arm / f"seed{seed}", arm, seed, truncate=(arm, seed) == ("weighted", 0),
                           drift=(arm, seed) == ("weighted", 1))
    failed = root / "ce_dice" / "seed1"
    failed.mkdir()
    (failed / "failed.txt").write_text("Traceback (most recent call last):\n  ...\nFloatingPointError: NaN loss at "
                                       "step 7\n")
    return root  # weighted/seed2 is missing; weighted/seed1's config drifted


def _aggregate(study_dir):
    with pytest.warns(UserWarning, match="line 5 is not JSON"):  # weighted/seed0's truncated last line
        return aggregate.aggregate(study_dir)


def _expected(arm, metric):
    return {seed: _scalars(arm, seed)[metric] for seed, v in enumerate(MIOU[arm]) if v is not None}


def test_results_csv_columns_and_numbers(study_dir):
    _aggregate(study_dir)
    with (study_dir / "results.csv").open() as f:
        reader = csv.reader(f)
        assert next(reader) == COLUMNS
        rows = [dict(zip(COLUMNS, r)) for r in reader]
    assert [(r["arm"], r["metric"]) for r in rows] == [
        (arm, metric) for arm in ARMS for metric in ("val/mean_iou", "val/boundary_accuracy")]
    for row in rows:
        mine = _expected(row["arm"], row["metric"])
        x = np.array(list(mine.values()))
        half = scipy_stats.t.ppf(0.975, x.size - 1) * np.std(x, ddof=1) / math.sqrt(x.size)
        assert int(row["n"]) == x.size == (3 if row["arm"] == "ce" else 2)  # failed / missing not counted
        assert float(row["mean"]) == pytest.approx(x.mean(), rel=1e-14)
        assert float(row["std"]) == pytest.approx(np.std(x, ddof=1), rel=1e-14)
        assert float(row["ci95_low"]) == pytest.approx(x.mean() - half, rel=1e-13)
        assert float(row["ci95_high"]) == pytest.approx(x.mean() + half, rel=1e-13)
        if row["arm"] == "ce":
            assert all(row[k] == "" for k in COLUMNS[7:])
            continue
        base = _expected("ce", row["metric"])
        seeds = sorted(set(mine) & set(base))
        a, b = np.array([mine[s] for s in seeds]), np.array([base[s] for s in seeds])
        d = a - b
        half = scipy_stats.t.ppf(0.975, d.size - 1) * np.std(d, ddof=1) / math.sqrt(d.size)
        assert float(row["diff_mean"]) == pytest.approx(d.mean(), rel=1e-12)
        assert float(row["diff_ci95_low"]) == pytest.approx(d.mean() - half, rel=1e-10)
        assert float(row["diff_ci95_high"]) == pytest.approx(d.mean() + half, rel=1e-10)
        if np.std(d, ddof=1) > 1e-12:
            assert float(row["p_value"]) == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-8)
    # full precision: repr round-trips
    ce = next(r for r in rows if r["arm"] == "ce" and r["metric"] == "val/mean_iou")
    assert ce["mean"] == repr(float(np.mean(MIOU["ce"])))


def test_results_md_tables_and_notes(study_dir):
    md = _aggregate(study_dir).read_text()
    assert "Does Dice help the thin class?" in md
    assert "| ce (baseline) | 3 |" in md and "| ce_dice | 2 |" in md and "| weighted | 2 |" in md
    assert "`ce_dice/seed1`: failed: FloatingPointError: NaN loss at step 7" in md
    assert "`weighted/seed2`: missing: no run directory" in md
    assert "`ce/seed0`" not in md.split("Runs not finished")[1]
    # the per-class table: a row per class, a column per arm
    assert "| class | ce | ce_dice | weighted |" in md
    bar = np.array([_scalars("ce", s)["val/iou/bar"] for s in range(3)])
    assert f"| bar | {bar.mean():.4f} ± {np.std(bar, ddof=1):.4f} |" in md
    # ce_dice's boundary accuracy is +0.02 on every paired seed: its CI excludes 0 → bold
    assert "**+0.0200**" in md
    assert "`val/mean_iou`: IoU per class from ONE confusion matrix" in md
    assert "`val/iou/<class>, dice/<class>`: per-class IoU and Dice" in md  # a code span: `<class>` stays
    assert "`val/absent_classes`" in md and "pixel_accuracy" not in md  # general notes kept, unreported left out
    assert "0, 1, 2" in md
    # the commit each run recorded; study.json's (the last launch's) only for runs that recorded none
    assert "`def5678`: runs ce/seed0, ce/seed1, ce/seed2" in md
    assert "`abc1234`: runs ce_dice/seed0, ce_dice/seed2, weighted/seed0, weighted/seed1: none recorded per run" in md
    hash_ce = load.config_hash(_config("ce", 0, data_dir="/elsewhere"))
    assert f"`ce`: {hash_ce}" in md  # seeds, names and data_dir do not enter the hash
    assert "`weighted`: THE SEEDS DISAGREE" in md
    assert "(plots/bars_val_mean_iou.png)" in md and "(plots/curves.png)" in md


def test_config_hash_reads_the_runs_own_seed_in_paths_as_any_seed():
    def config(seed, init_from):
        return {"seed": seed, "name": f"crf_finetune_seed{seed}", "train": {"steps": 500, "init_from": init_from}}
    # train.init_from="{study_workdir}/plain/seed{seed}": each seed starts from its own run, one config
    same = {load.config_hash(config(seed, f"/runs/crf/plain/seed{seed}")) for seed in (0, 1, 12)}
    assert len(same) == 1
    # another arm, another seed's run or a name that only contains the seed still differ
    base = load.config_hash(config(1, "/runs/crf/plain/seed1"))
    for other in ("/runs/crf/ce/seed1", "/runs/crf/plain/seed0", "/runs/crf/plain/seed11", "/runs/crf/plain_seed1"):
        assert load.config_hash(config(1, other)) != base, other
    # a field added after a run was saved (init_seed), at its neutral value, hashes as its absence
    added = {**config(1, "/runs/crf/plain/seed1"), "init_seed": None, "data": {"augment": {"rot90": False}}}
    assert load.config_hash(added) == base
    assert load.config_hash({**added, "init_seed": 0}) != base


def test_results_tex_and_plots(study_dir):
    _aggregate(study_dir)
    tex = (study_dir / "results.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in tex
    assert "val/mean\\_iou" in tex and "ce\\_dice" in tex and "95\\,\\%" in tex
    assert "% Runs not finished" in tex and "ce_dice/seed1: failed" in tex
    for name in ("bars_val_mean_iou.png", "bars_val_boundary_accuracy.png", "curves.png"):
        with Image.open(study_dir / "plots" / name) as image:
            image.verify()
            assert image.format == "PNG"


def test_curves_skip_the_truncated_line(study_dir):
    study = load.load_study(study_dir)
    with pytest.warns(UserWarning, match="line 5 is not JSON"):
        run = load.load_run(study, "weighted", 0)
    steps, values = run.curves["train/loss"]
    assert steps.tolist() == [10, 20] and values.tolist() == [0.1, 0.05]
    assert run.curves["val/mean_iou"][1].tolist() == pytest.approx([0.5, 0.6])


@pytest.mark.filterwarnings("ignore:.*is not JSON")
def test_a_metric_a_finished_run_lacks_is_an_error(study_dir):
    record = json.loads((study_dir / "study.json").read_text())
    record["metrics"].append("val/mean_dice")
    (study_dir / "study.json").write_text(json.dumps(record))
    with pytest.raises(StudyError, match=r"ce/seed0 .*no scalar 'val/mean_dice'.*val/boundary_accuracy"):
        aggregate.collect(study_dir)


COMPARISONS = [["ce_dice:val/boundary_accuracy", "weighted:val/mean_iou"],  # two arms, two scalars
               ["weighted:val/mean_iou", "ce_dice:val/mean_iou"]]  # two arms, one scalar


def _with_comparisons(study_dir):
    record = json.loads((study_dir / "study.json").read_text())
    (study_dir / "study.json").write_text(json.dumps({**record, "comparisons": COMPARISONS}))
    return _aggregate(study_dir)


def test_comparisons_pair_two_arms_scalars_by_seed(study_dir, tmp_path):
    md = _with_comparisons(study_dir).read_text()
    with (study_dir / "comparisons.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["first"], r["second"]) for r in rows] == [tuple(pair) for pair in COMPARISONS]
    # ce_dice finished seeds 0 and 2, weighted seeds 0 and 1: one pair, seed 0
    first, second = _expected("ce_dice", "val/boundary_accuracy"), _expected("weighted", "val/mean_iou")
    assert sorted(first) == [0, 2] and sorted(second) == [0, 1]
    row = rows[0]
    assert row["n"] == "1" and float(row["diff_mean"]) == pytest.approx(first[0] - second[0], rel=1e-13)
    assert float(row["first_mean"]) == pytest.approx(np.mean(list(first.values())), rel=1e-14)
    assert float(row["second_std"]) == pytest.approx(np.std(list(second.values()), ddof=1), rel=1e-14)
    assert row["diff_ci95_low"] == row["p_value"] == ""  # one pair: no interval, no test
    miou = _expected("ce_dice", "val/mean_iou")
    assert rows[1]["n"] == "1" and float(rows[1]["diff_mean"]) == pytest.approx(second[0] - miou[0], rel=1e-13)
    table = md.split("## Paired comparisons")[1].split("\n## ")[0]
    assert "| `ce_dice:val/boundary_accuracy` | `weighted:val/mean_iou` |" in table
    assert f"| {number(first[0] - second[0], signed=True)} | — | — | 1 |" in table
    assert "`comparisons`: first − second" in md
    tex = (study_dir / "results.tex").read_text()
    assert "tab:study-imbalance-comparisons" in tex and "ce\\_dice:val/boundary\\_accuracy" in tex
    out = tmp_path / "docs" / "results.md"
    with pytest.warns(UserWarning):
        report.main([str(study_dir.parent), "--out", str(out)])
    assert (out.parent / "results_files" / "imbalance" / "comparisons.csv").read_text() == (
        study_dir / "comparisons.csv").read_text()
    assert "[comparisons.csv](results_files/imbalance/comparisons.csv)" in out.read_text()


def test_comparisons_match_ttest_rel_over_three_pairs(study_dir):
    """ce against itself on two scalars: all three seeds pair."""
    record = json.loads((study_dir / "study.json").read_text())
    (study_dir / "study.json").write_text(json.dumps(
        {**record, "comparisons": [["ce:val/boundary_accuracy", "ce:val/mean_iou"]]}))
    _aggregate(study_dir)
    (row,) = csv.DictReader((study_dir / "comparisons.csv").open())
    a = np.array([_scalars("ce", s)["val/boundary_accuracy"] for s in range(3)])
    b = np.array([_scalars("ce", s)["val/mean_iou"] for s in range(3)])
    d = a - b
    half = scipy_stats.t.ppf(0.975, 2) * np.std(d, ddof=1) / math.sqrt(3)
    assert row["n"] == "3" and float(row["diff_mean"]) == pytest.approx(d.mean(), rel=1e-12)
    assert (float(row["diff_ci95_low"]), float(row["diff_ci95_high"])) == pytest.approx(
        (d.mean() - half, d.mean() + half), rel=1e-10)
    assert float(row["p_value"]) == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-8)
    record["comparisons"] = []  # dropped from the study: no stale table is left
    (study_dir / "study.json").write_text(json.dumps(record))
    _aggregate(study_dir)
    assert not (study_dir / "comparisons.csv").exists()


def test_a_comparison_naming_no_arm_of_study_json_is_an_error(study_dir):
    record = json.loads((study_dir / "study.json").read_text())
    (study_dir / "study.json").write_text(json.dumps({**record, "comparisons": [["ce:val/mean_iou", "dice:val/x"]]}))
    with pytest.raises(StudyError, match=r"study.json: comparison term 'dice:val/x' names no arm"):
        load.load_study(study_dir)


def test_report_writes_one_document(study_dir, tmp_path):
    out = tmp_path / "docs" / "results.md"
    with pytest.warns(UserWarning):
        report.main([str(tmp_path / "runs"), "--out", str(out)])
    doc = out.read_text()
    assert "## Study `imbalance`" in doc and "### val/mean_iou" in doc and "Does Dice help" in doc
    link = "results_files/imbalance/plots/curves.png"  # copied beside the document, runs stay where they are
    assert f"({link})" in doc and (out.parent / link).is_file()
    assert (out.parent / "results_files" / "imbalance" / "results.csv").read_text() == (
        study_dir / "results.csv").read_text()
    assert "../runs/studies/imbalance" in doc  # the source is named
    # another study aggregated later, from elsewhere: the earlier section stays, marked as kept
    other = tmp_path / "elsewhere" / "other"
    shutil.copytree(study_dir, other)
    record = json.loads((other / "study.json").read_text())
    (other / "study.json").write_text(json.dumps({**record, "name": "other"}))
    with pytest.warns(UserWarning):
        report.main([str(tmp_path / "elsewhere"), "--out", str(out)])
    again = out.read_text()
    assert "- [imbalance](#study-imbalance)\n- [other](#study-other)" in again
    kept = again.split("## Study `imbalance`")[1].split("## Study `other`")[0]
    assert "*Kept from an earlier aggregation*" in kept and "### val/mean_iou" in kept
    assert "Kept from" not in again.split("## Study `other`")[1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "empty"), "--out", str(out)])
