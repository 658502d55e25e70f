"""Resuming runs: unreadable checkpoints skipped (issue 10 item 1), extensions keep their LR schedule (item 2),
evaluation-only changes allowed and logged (item 3), a truncated metrics.jsonl line dropped (item 6)."""
import json
import logging
import shutil

import pytest

from seg_jax import train
from seg_jax.train import optim
from seg_jax.train.writers import MetricWriter


def _lines(workdir, group="train"):
    return [x for x in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if x["group"] == group]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, data_dir):
    """A finished tiny run (4 steps: its compiled steps are the other tiny runs') keeping checkpoints 2, 3 and 4,
    and its final scalars."""
    from experiments import default
    config = default.get_config("tiny")
    config.data.data_dir = data_dir
    config.train.update(checkpoint_every=1, keep_checkpoints=3)
    workdir = tmp_path_factory.mktemp("checkpointed") / "run"
    return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.parametrize("damage", ["state/_METADATA", "state/d", "meta/metadata"])
def test_unreadable_newest_checkpoint_is_skipped_with_a_warning(checkpointed, tmp_path, caplog, damage):
    config, reference, scalars = checkpointed
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    target = workdir / "checkpoints" / "4" / damage
    (next(p for p in sorted(target.iterdir()) if p.is_file()) if target.is_dir() else target).unlink()
    (workdir / "results.json").unlink()  # the run was killed after committing step 4
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate(config, workdir)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint {workdir.absolute() / 'checkpoints' / '4'} cannot be read" in m for m in warned), warned
    assert resumed == scalars  # resumed from step 3 and recomputed step 4 exactly
    assert (workdir / "unreadable" / "checkpoints" / "4").is_dir()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3", "4"]


def test_no_readable_checkpoint_is_an_error_naming_them(checkpointed, tmp_path):
    config, reference, _ = checkpointed
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    for step in ("2", "3", "4"):
        (workdir / "checkpoints" / step / "meta" / "metadata").unlink()
    with pytest.raises(train.NoCheckpointError, match=r"no readable latest checkpoint.*checkpoints/4 .*checkpoints/3 "
                                                      r".*checkpoints/2 "):
        train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory, data_dir):
    from experiments import default
    config = default.get_config("tiny")
    config.data.data_dir = data_dir
    workdir = tmp_path_factory.mktemp("four") / "run"
    train.train_and_evaluate(config, workdir)
    return config, workdir


def _extend(config, reference, workdir, **train_fields):
    shutil.copytree(reference, workdir)
    config = config.copy_and_resolve_references()
    config.train.update(steps=6, log_every=1, **train_fields)
    config.evals.val.batch_size = 4
    train.train_and_evaluate(config, workdir)
    return {x["step"]: x["train/learning_rate"] for x in _lines(workdir)}


def test_extending_a_run_keeps_its_schedule_and_logs_the_changes(four_steps, tmp_path, caplog):
    config, reference = four_steps
    original = optim.make_schedule(config.schedule, base_lr=config.optimizer.learning_rate, total_steps=4)
    with caplog.at_level(logging.INFO):
        lr = _extend(config, reference, tmp_path / "run")
    final = float(original(4))  # the LR the 4-step schedule ends on (base x end_factor)
    assert final == pytest.approx(config.optimizer.learning_rate * config.schedule.end_factor)
    assert lr[5] == pytest.approx(final, rel=1e-6) and lr[6] == pytest.approx(final, rel=1e-6)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "schedule spans 4 steps: keeping it" in messages
    # item 3: evaluation-only and logging changes resume, and are logged old → new
    assert "evals.val.batch_size: 8 → 4" in messages and "train.log_every: 2 → 1" in messages
    assert "train.steps: 4 → 6" in messages


def test_schedule_steps_re_plans_an_extended_run(four_steps, tmp_path, caplog):
    config, reference = four_steps
    with caplog.at_level(logging.INFO):
        lr = _extend(config, reference, tmp_path / "run", schedule_steps=6)
    replanned = optim.make_schedule(config.schedule, base_lr=config.optimizer.learning_rate, total_steps=6)
    assert lr[5] == pytest.approx(float(replanned(4)), rel=1e-6) and lr[5] > 2 * float(replanned(6))
    assert "re-planned over 6 steps (it spanned 4)" in "\n".join(r.getMessage() for r in caplog.records)


def test_a_truncated_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
    records = [{"step": s, "group": "train", "train/loss": 1.0} for s in (2, 4, 6)]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 8, "group": "tr'
    (tmp_path / "metrics.jsonl").write_text(text)
    with caplog.at_level(logging.INFO):
        MetricWriter(tmp_path, enabled=True, total_steps=10, resume_step=4).close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dropping its last line, which is not a complete JSON record" in m for m in warned), warned
