"""Study files build; a study runs arm × seed as ordinary runs, resumes, records failures, and tabulates."""
import csv
import json
import pathlib
import shlex
import subprocess
import sys

import pytest

from seg_jax import train
from seg_jax.studies import runner, spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDY_FILES = sorted(p for p in (ROOT / "experiments" / "studies").glob("*.py") if p.stem != "__init__")
CASES = [(p, arg) for p in STUDY_FILES for arg in spec.load_module(p).ARGS]


@pytest.mark.parametrize("path,arg", CASES, ids=[f"{p.stem}:{a}" for p, a in CASES])
def test_study_file_builds_every_arm(path, arg):
    module = spec.load_module(path)
    assert module.__doc__.lstrip().startswith(f"python launch.py --study=experiments/studies/{path.stem}.py")
    study = spec.load_study(f"{path}:{arg}" if arg else str(path))
    assert len(study.seeds) >= (2 if arg == "tiny" else 3)
    spec.check_metrics(study)  # every metric is a scalar of every arm's evaluators


def test_an_arm_naming_a_missing_field_fails(tmp_path):
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py:tiny"))
    study.arms.ce["train.stpes"] = 3
    with pytest.raises(spec.StudyError, match="arm 'ce': no config field 'train.stpes'; fields there: .*steps"):
        spec.check_study(study)
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py:tiny"))
    study.metrics = ("val/miou",)
    with pytest.raises(spec.StudyError, match="arm 'ce': its evaluators report no val/miou; they report .*mean_iou"):
        spec.check_metrics(study)
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py:tiny"))
    study.baseline = "weighted"
    with pytest.raises(spec.StudyError, match="baseline 'weighted' is not an arm"):
        spec.check_study(study)


@pytest.mark.parametrize("pair,message", [
    (("dice:val/mean_iou", "median_frequency"), r"term 'median_frequency' is not 'arm:scalar'"),
    (("dice:val/mean_iou", "dcie:val/mean_iou"), r"term 'dcie:val/mean_iou' names no arm; arms: ce, "),
    (("dice:val/mean_iou", "dice:val/mean_iou"), r"two different 'arm:scalar' terms"),
    (("dice:val/mean_iou",), r"two different 'arm:scalar' terms"),
])
def test_a_comparison_that_is_not_two_arm_scalar_terms_fails(pair, message):
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py:tiny"))
    study.comparisons = (pair,)
    with pytest.raises(spec.StudyError, match=f"study 'imbalance': .*{message}"):
        spec.check_study(study)


def test_a_comparison_scalar_its_arm_does_not_report_fails():
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py:tiny"))
    study.comparisons = (("dice:val/mean_iou", "ce:val_crf/mean_iou"),)
    spec.check_study(study)  # the form is right; the scalar is checked against the arm's evaluators
    with pytest.raises(spec.StudyError, match=r"arm 'ce': its evaluators report no val_crf/mean_iou \(comparisons\)"):
        spec.check_metrics(study)


def test_run_config_applies_common_and_arm_overrides_in_order():
    study = spec.load_study(str(ROOT / "experiments/studies/imbalance.py"))
    config = spec.run_config(study, "median_frequency", 2)
    assert config.seed == 2 and config.name == "imbalance_median_frequency_seed2"
    assert config.class_weights == "median_frequency" and config.loss.to_dict() == {"cross_entropy": 1.0}
    assert config.evals.val.every == 0  # from `common`
    dice = spec.run_config(study, "dice", 0)
    assert dice.loss.to_dict() == {"dice": 1.0}  # a mapping replaces the field whole


STUDY = '''"""python launch.py --study={path} (a test study)"""
from seg_jax.studies.spec import make_arms, overrides
import ml_collections

def get_study(arg=None):
    s = ml_collections.ConfigDict()
    s.name, s.description = "mini", "test"
    s.base = "{root}/experiments/default.py:tiny"
    s.arms = make_arms({{"tuned": {{"train.init_from": "{{study_workdir}}/ce/seed{{seed}}"}},  # listed first, runs last
                        "ce": {{"loss": {{"cross_entropy": 1.0}}}}, "dice": {{}}, "broken": {{"model.depth": -1}}}})
    s.common = overrides({{"data.data_dir": {data_dir!r}}})  # the tiny config's steps: its compiled steps are cached
    s.seeds = (0, 1)
    s.metrics = ("val/mean_iou", "val/pixel_accuracy")
    s.per_class = ("val/iou",)
    s.baseline = "ce"
    return s
'''


def test_a_study_runs_resumes_records_failures_and_tabulates(tmp_path, data_dir, monkeypatch):
    path = tmp_path / "mini.py"
    path.write_text(STUDY.format(path=path, root=ROOT, data_dir=data_dir))
    workdir = tmp_path / "runs"
    md = runner.run_study(str(path), workdir, only=["ce", "dice", "broken"])
    for arm in ("ce", "dice"):
        for seed in (0, 1):
            assert (workdir / arm / f"seed{seed}" / "results.json").is_file()
    assert "Traceback" in (workdir / "broken" / "seed0" / "failed.txt").read_text()
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert list(rows[0]) == ["arm", "metric", "n", "mean", "std", "ci95_low", "ci95_high", "diff_mean",
                             "diff_ci95_low", "diff_ci95_high", "p_value"]
    by = {(r["arm"], r["metric"]): r for r in rows}
    finals = [json.loads((workdir / "dice" / f"seed{s}" / "results.json").read_text())["scalars"]["val/mean_iou"]
              for s in (0, 1)]
    assert float(by["dice", "val/mean_iou"]["mean"]) == pytest.approx(sum(finals) / 2)
    assert by["broken", "val/mean_iou"]["n"] == "0" and "broken/seed0" in md.read_text()
    assert (workdir / "plots" / "curves.png").is_file()
    # an arm fine-tuned from another arm's runs (train.init_from) runs after them, each seed from its own seed's run
    runner.run_study(str(path), workdir, only=["tuned", "ce"])
    for seed in (0, 1):
        saved = json.loads((workdir / "tuned" / f"seed{seed}" / "config.json").read_text())
        assert saved["train"]["init_from"] == str(workdir / "ce" / f"seed{seed}")
        assert (workdir / "tuned" / f"seed{seed}" / "results.json").is_file()
    # relaunching recomputes nothing that finished; the two seeds' configs differ only in seed
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, wd: calls.append(wd))
    runner.run_study(str(path), workdir, only=["ce", "dice"])
    assert calls == []
    # a killed run (no results.json) resumes: only it is run again
    (workdir / "ce" / "seed1" / "results.json").unlink()
    runner.run_study(str(path), workdir, only=["ce"])
    assert calls == [workdir / "ce" / "seed1"]
    # a run fine-tuned from an unfinished run is refused and recorded; the order puts ce before tuned
    for seed in (0, 1):
        (workdir / "tuned" / f"seed{seed}" / "results.json").unlink()
    calls.clear()
    runner.run_study(str(path), workdir, only=["tuned", "ce"])
    assert calls == [workdir / "ce" / "seed1", workdir / "tuned" / "seed0"]
    assert "ce/seed1 has not finished" in (workdir / "tuned" / "seed1" / "failed.txt").read_text()
    assert [shlex.split(line)[-1] for line in runner.commands(str(path), workdir, spec.load_study(str(path)))][-2:] \
        == ["--study_run=tuned/seed0", "--study_run=tuned/seed1"]
    # another study in the same workdir is refused
    path.write_text(STUDY.format(path=path, root=ROOT, data_dir=data_dir).replace("(0, 1)", "(0, 1, 2)"))
    with pytest.raises(spec.StudyError, match="holds study 'mini' with other seeds"):
        runner.run_study(str(path), workdir)


def test_study_commands_are_one_launch_line_per_run(tmp_path, data_dir):
    path = tmp_path / "mini.py"
    path.write_text(STUDY.format(path=path, root=ROOT, data_dir=data_dir))
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), f"--study={path}", f"--workdir={tmp_path / 'w'}",
                          "--study_commands", "--study_only=ce,dice"], capture_output=True, text=True, check=True,
                         timeout=120, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    assert [shlex.split(line)[-1] for line in lines] == [f"--study_run={arm}/seed{s}" for arm in ("ce", "dice")
                                                         for s in (0, 1)]
    assert not (tmp_path / "w").exists()
    assert runner.parse_run("dice/seed12") == ("dice", 12)
    with pytest.raises(spec.StudyError, match="ARM/seed<k>"):
        runner.parse_run("dice/12")


def test_parallel_runs_report_each_return_code(tmp_path):
    # `--study_parallel=K` runs the per-run launch.py lines as K subprocesses at once (end to end by hand: a
    # 2-arm tiny study with --study_parallel=2 wrote both arms' runs and the tables); here the scheduling.
    lines = [shlex.join([sys.executable, "-c", f"import sys, time; time.sleep(0.2); sys.exit({code})"])
             for code in (0, 3, 0, 1)]
    assert runner._run_in_subprocesses(lines, parallel=2) == [0, 3, 0, 1]


def test_relaunching_a_study_whose_arm_holds_a_tuple_is_not_refused(tmp_path):
    # study.json stores the tuple as a list; the comparison with the relaunched study must not see a change
    study = spec.new_study("tuples", None, args=(None,))
    study.update(base="experiments/default.py", arms=spec.make_arms({"a": {"data.scale_range": (1.0, 1.0)}}),
                 common=spec.overrides({}), seeds=(0,), metrics=("val/mean_iou",), baseline="a")
    runner.write_study_json(study, tmp_path)
    runner.write_study_json(study, tmp_path)
    assert json.loads((tmp_path / "study.json").read_text())["arms"] == {"a": {"data.scale_range": [1.0, 1.0]}}
    study.arms.a["data.scale_range"] = (1.0, 2.0)
    with pytest.raises(spec.StudyError, match="with other arms"):
        runner.write_study_json(study, tmp_path)


def test_a_study_may_gain_arms_but_not_lose_or_change_one(tmp_path):
    study = spec.new_study("growing", None, args=(None,))
    study.update(base="experiments/default.py", arms=spec.make_arms({"a": {"train.steps": 10}}),
                 common=spec.overrides({}), seeds=(0,), metrics=("val/mean_iou",), baseline="a")
    runner.write_study_json(study, tmp_path)
    grown = study.copy_and_resolve_references()
    grown.arms = spec.make_arms({"a": {"train.steps": 10}, "b": {"train.steps": 20}})
    runner.write_study_json(grown, tmp_path)  # an ablation added later
    assert list(json.loads((tmp_path / "study.json").read_text())["arms"]) == ["a", "b"]
    for arms in ({"a": {"train.steps": 10}}, {"a": {"train.steps": 11}, "b": {"train.steps": 20}},
                 {"b": {"train.steps": 20}, "c": {}}):
        changed = study.copy_and_resolve_references()
        changed.arms = spec.make_arms(arms)
        with pytest.raises(spec.StudyError, match="with other arms"):
            runner.write_study_json(changed, tmp_path)
