"""`--mode=tune` (issue 12 section 3): the post-processing searched on validation from outputs computed once,
written beside the checkpoint, and applied by eval and predict unless told otherwise."""
import importlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from seg_jax import data, evaluators as evals, postprocess, predict, train, tune
from seg_jax.train import loop, steps
from seg_jax.train.checkpoints import open_for_reading
from seg_jax.tune import search, target as tgt

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = [(p.stem, arg) for p in sorted((ROOT / "experiments").glob("*.py"))
         if hasattr(importlib.import_module(f"experiments.{p.stem}"), "get_config")
         for arg in importlib.import_module(f"experiments.{p.stem}").ARGS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A tiny run with a `crf` and an `instances` entry; its final scalars are a plain eval of the latest step."""
    from experiments import default
    config = default.get_config("crf,tiny")
    config.data.data_dir = data_dir
    config.evals.val_crf.num_pictures = 0
    config.evals.val_instances = {"type": "instances", "every": 4, "batch_size": 8, "num_pictures": 0,
                                  "per_class": True, "options": {"method": "connected_components", "min_size": 0}}
    workdir = tmp_path_factory.mktemp("tune") / "run"
    return config, workdir, train.train_and_evaluate(config, workdir)


def _direct_scores(config, workdir, entry, option, values, metric):
    """The entry's evaluator run directly (the network included) on the latest checkpoint with each value."""
    ckpts = open_for_reading(workdir, config, which="latest", purpose="test")
    run = loop.build_run(config, training=False)
    state = steps.replicate(ckpts.restore_readable(run.state)[0])
    ckpts.close()
    kind = config.evals[entry].type
    scores = []
    for value in values:
        cfg = tgt.with_options(config.evals[entry], {option: value}, kind=kind)
        ev = evals.EVALUATORS.get(kind)(entry, cfg, task=run.exp.task, class_names=run.dataset.class_names,
                                        data_cfg=config.data)
        scores.append(ev.run(state, dataset=run.dataset).scalars[metric])
    return scores


def _with_tune(config, **tune_options):
    config = config.copy_and_resolve_references()
    config.tune.update(tune_options)
    return config


def test_crf_search_picks_what_the_evaluator_says_is_best_and_eval_applies_it(trained, monkeypatch):
    config, workdir, scalars = trained
    values = [10.0, 0.0, 200.0]  # the config's first: the baseline
    config = _with_tune(config, entry="val_crf", space={"bilateral_compat": values})
    traces = []  # device_fn runs in Python only while its pmapped function is traced
    real = evals.CRFEvaluator.device_fn
    monkeypatch.setattr(evals.CRFEvaluator, "device_fn", lambda self, *a: traces.append(1) or real(self, *a))
    result = tune.tune(config, workdir)
    assert len(traces) == 1  # the Potts weights are traced: three trials, one compilation
    monkeypatch.undo()
    def crf_entry(**options):
        return evals.CRFEvaluator("val_crf", {"type": "crf", **options}, task=None, class_names=("a", "b"),
                                  data_cfg=config.data)
    crf_entry(bilateral_compat=3.0).share_compilation(crf_entry(bilateral_compat=5.0))
    with pytest.raises(ValueError, match="differ in options other than gaussian_compat, bilateral_compat"):
        crf_entry(iterations=2).share_compilation(crf_entry(iterations=3))
    record = result.record
    direct = _direct_scores(config, workdir, "val_crf", "bilateral_compat", values, "val_crf/mean_iou")
    assert [t["score"] for t in record["trials"]] == pytest.approx(direct, abs=1e-6)
    assert [t["options"]["bilateral_compat"] for t in record["trials"]] == values
    best = max(range(len(values)), key=lambda i: (direct[i], -i))  # the earliest among equals
    assert record["chosen"] == {"bilateral_compat": values[best]}
    assert record["baseline"] == pytest.approx(scalars["val_crf/mean_iou"], abs=1e-6)  # a plain eval's score
    assert record["best"] == pytest.approx(direct[best], abs=1e-6)
    assert (record["entry"], record["split"], record["step"], record["type"]) == ("val_crf", "validation", 4, "crf")
    assert result.path == workdir / "tuned" / "val_crf.json"
    assert json.loads(result.path.read_text()) == record
    table = result.path.with_suffix(".md").read_text()
    assert "| trial | bilateral_compat | val_crf/mean_iou |" in table and "| config | " in table

    # eval applies the tuned options, records them, and --no_tuned restores the config's
    tuned = train.evaluate(None, workdir)
    assert tuned["val_crf/mean_iou"] == pytest.approx(record["best"], abs=1e-6)
    written = json.loads(sorted((workdir / "eval").glob("latest_step4*.json"))[-1].read_text())
    assert written["postprocess"]["val_crf"]["source"] == "tuned"
    assert written["postprocess"]["val_crf"]["options"]["bilateral_compat"] == values[best]
    plain = train.evaluate(None, workdir, use_tuned=False)
    assert plain["val_crf/mean_iou"] == pytest.approx(record["baseline"], abs=1e-6)
    newest = max((workdir / "eval").glob("latest_step4*.json"), key=lambda p: p.stat().st_mtime)
    assert json.loads(newest.read_text())["postprocess"]["val_crf"]["source"] == "config"

    # never overwritten without overwrite=True
    before = result.path.read_text()
    with pytest.raises(tune.TunedExistsError, match=r"tuned/val_crf.json exists .*--overwrite"):
        tune.tune(config, workdir)
    assert result.path.read_text() == before
    again = tune.tune(_with_tune(config, space={"bilateral_compat": [10.0]}), workdir, overwrite=True)
    assert again.chosen == {"bilateral_compat": 10.0} and len(again.record["trials"]) == 1


def test_a_crf_entry_with_tta_is_tuned_on_its_augmented_outputs(trained, tmp_path):
    """The entry's test-time augmentation runs once when the outputs are cached; each trial then scores what the
    evaluator itself (network and TTA included) scores."""
    import shutil
    config, workdir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    config = _with_tune(config, entry="val_crf", space={"bilateral_compat": [10.0, 0.0]})
    config.evals.val_crf.tta = {"flips": True, "scales": (0.75, 1.0)}
    record = tune.tune(config, copy, overwrite=True).record  # the copy may hold another test's tuned file
    direct = _direct_scores(config, copy, "val_crf", "bilateral_compat", [10.0, 0.0], "val_crf/mean_iou")
    assert [t["score"] for t in record["trials"]] == pytest.approx(direct, abs=1e-6)
    assert "tta" not in record["chosen"]


def test_instances_search_and_predict_apply_it(trained):
    config, workdir, scalars = trained
    assert scalars["val_instances/AJI"] > 0  # overlaps with the true shapes (too few for a DSB score after 4 steps)
    config = _with_tune(config, entry="val_instances", space={"min_size": [0]}, metric="val_instances/AJI")
    config.evals.val_instances.options.min_size = 1000  # px: removes every instance of a 32x32 image
    record = tune.tune(config, workdir).record
    direct = _direct_scores(config, workdir, "val_instances", "min_size", [1000, 0], "val_instances/AJI")
    assert [t["score"] for t in record["trials"]] == pytest.approx(direct, abs=1e-9)
    assert direct == [0.0, pytest.approx(scalars["val_instances/AJI"], abs=1e-9)]
    assert record["chosen"] == {"min_size": 0} and record["baseline"] == 0.0

    # predict's instances use the tuned options unless use_tuned=False
    path = workdir / "tuned" / "val_instances.json"
    chosen = dict(json.loads(path.read_text()), chosen={"min_size": 7, "foreground_threshold": 0.3})
    path.write_text(json.dumps(chosen))
    options = predict.load_predictor(None, workdir).instance_options
    assert options[0] is True and options[1]["min_size"] == 7 and options[1]["foreground_threshold"] == 0.3
    assert predict.load_predictor(None, workdir, use_tuned=False).instance_options[1]["min_size"] == 0


def test_coordinate_descent_by_hand():
    """Score -(a - 2)^2 - (b - 1)^2: the first pass moves a to 2, then b to 1; the second tries the other values of
    a at b = 1 (each combination is scored once), changes nothing and stops."""
    calls = []

    def score(o):
        calls.append(dict(o))
        return -(o["a"] - 2) ** 2 - (o["b"] - 1) ** 2
    trials = search.coordinate_descent(score, start={"a": 0, "b": 0}, space={"a": [0, 1, 2, 3], "b": [0, 1, 2]},
                                       sweeps=3, max_trials=50)
    assert [t.options for t in trials] == [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 2, "b": 0}, {"a": 3, "b": 0},
                                           {"a": 2, "b": 1}, {"a": 2, "b": 2}, {"a": 0, "b": 1}, {"a": 1, "b": 1},
                                           {"a": 3, "b": 1}]
    assert search.best(trials).options == {"a": 2, "b": 1} and len(calls) == len(trials)  # each once
    assert len(search.coordinate_descent(score, start={"a": 0, "b": 0}, space={"a": [0, 1, 2, 3]}, sweeps=1,
                                         max_trials=2)) == 2
    assert search.best([search.Trial({"a": 0}, 1.0), search.Trial({"a": 1}, 1.0),
                        search.Trial({"a": 2}, float("nan"))]).options == {"a": 0}  # ties keep the earlier
    grid = search.grid(score, start={"a": 9, "b": 9}, space={"a": [1, 2], "b": [0, 1]}, max_trials=5)
    assert [t.options for t in grid][0] == {"a": 9, "b": 9} and search.best(grid).options == {"a": 2, "b": 1}
    with pytest.raises(ValueError, match="needs 5 evaluations"):
        search.grid(score, start={"a": 9, "b": 9}, space={"a": [1, 2], "b": [0, 1]}, max_trials=4)


@pytest.mark.parametrize("changes, field, message", [
    ({"metric": "val_crf/nope"}, "tune.metric", "'val_crf/nope' is not a scalar of evals.val_crf; valid: "
                                                "val_crf/mean_iou"),
    ({"split": "test"}, "tune.split", "'test' is a test split"),
    ({"split": "test[:4]+validation"}, "tune.split", "is a test split"),
    ({"entry": "val"}, "tune.entry", "'val' is not an evals entry of type 'crf' or 'instances'; those are: "
                                     "val_crf, val_instances"),
    ({"space": {"boundary_width": [1, 2]}}, "tune.space.boundary_width", "not a tunable option of evals.val_crf"),
    ({"space": {"bilateral_srgb": []}}, "tune.space.bilateral_srgb", "non-empty list"),
    ({"search": "random"}, "tune.search", "'random' is not one of coordinate, grid"),
])
def test_bad_settings_are_refused_naming_the_field(trained, changes, field, message):
    config, workdir, _ = trained
    with pytest.raises(train.ConfigError, match=message) as raised:
        tune.tune(_with_tune(config, **changes), workdir)
    assert raised.value.field == field


def test_test_split_allowed_when_asked(trained):
    config, workdir, _ = trained
    config = _with_tune(config, split="test", allow_test=True, space={"bilateral_compat": [10.0]})
    assert tune.tune(config, workdir, overwrite=True).record["split"] == "test"


def test_launch_tune_reports_a_bad_metric_in_one_line(trained):
    _, workdir, _ = trained
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--mode=tune", f"--workdir={workdir}",
                           "--config.tune.metric=val_crf/miou"], env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: tune.metric: 'val_crf/miou' is not a scalar")


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_every_shipped_config_has_a_valid_tune_section(name, arg):
    """The `tune` defaults resolve for every config with a crf / instances entry, and every value of the default
    space builds that entry's evaluator."""
    from seg_jax.train.experiment import build_experiment
    config = importlib.import_module(f"experiments.{name}").get_config(arg)
    class_names = data.class_names(config.data)
    exp = build_experiment(config, num_classes=len(class_names))
    built = evals.build_evaluators(config, task=exp.task, class_names=class_names)
    if not any(e.get("type") in tgt.KINDS for e in (config.get("evals") or {}).values()):
        with pytest.raises(train.ConfigError, match="no entry of type 'crf' or 'instances'"):
            tgt.resolve(config, built)
        return
    found = tgt.resolve(config, built)
    assert found.metric in evals.scalar_names(built) and found.split != "test"
    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(class_names)), (12, 12)).astype(np.float32)
    for option, values in found.space.items():
        for value in values:
            entry = tgt.with_options(found.entry_config, {option: value}, kind=found.kind)
            ev = evals.EVALUATORS.get(found.kind)(found.entry, entry, task=exp.task, class_names=class_names,
                                                  data_cfg=config.data)
            if found.kind == "instances":  # every value is one the post-processing takes
                distance = np.random.default_rng(1).random((12, 12)).astype(np.float32) if ev.reads_distance else None
                postprocess.instances_with_scores(probabilities, distance, per_class=ev.options["per_class"],
                                                  **ev.options["options"])
