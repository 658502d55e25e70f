"""config.logging.writers: TensorBoard by default, W&B and MLflow imported only when listed, checked by reading
back what they wrote (W&B's offline run file, MLflow's client on a file: store)."""
from __future__ import annotations

import json
import math
import pathlib
import struct
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from seg_jax.train import trackers, validate
from seg_jax.train.writers import MetricWriter

ROOT = pathlib.Path(__file__).resolve().parents[1]
PICTURE = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)


def _log_a_run(workdir, logging_cfg, *, steps=((2, "train", {"train/loss": 0.5, "train/bad": math.nan}),
                                               (4, "val", {"val/mean_iou": 0.25, "val/iou/disc": 0.125}))):
    writer = MetricWriter(workdir, enabled=True, total_steps=4, logging_cfg=logging_cfg, run_name="tiny",
                          run_config={"model.name": "unet", "train.steps": 4})
    for step, group, scalars in steps:
        writer.scalars(step, group, scalars)
    writer.image(4, "val/predictions", PICTURE)
    writer.close()


def test_default_writes_tensorboard_and_imports_neither_wandb_nor_mlflow(tmp_path):
    script = (f"import sys; from seg_jax.train.writers import MetricWriter; "
              f"w = MetricWriter({str(tmp_path)!r}, enabled=True, total_steps=2); w.scalars(1, 'train', "
              f"{{'train/loss': 1.0}}); w.close(); print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert any((tmp_path / "tensorboard").iterdir())
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "group": "train", "train/loss": 1.0}
    assert not (tmp_path / trackers.IDS_FILE).exists()


def test_a_missing_package_is_named_with_its_pip_install(monkeypatch, make_config, tmp_path):
    monkeypatch.setitem(trackers.PACKAGES, "mlflow", ("no_such_module_for_seg_jax", "mlflow-skinny"))
    with pytest.raises(trackers.MissingPackageError, match=r"'mlflow'.*not installed: pip install mlflow-skinny"):
        trackers.create_writers(["mlflow"], tmp_path)
    config = make_config()
    config.logging.writers = ("tensorboard", "mlflow")
    with pytest.raises(validate.ConfigError, match=r"^logging.writers: 'mlflow' needs .*: pip install mlflow-skinny"):
        validate.validate_config(config, num_devices=1, process_count=1)
    for bad, message in ((("tensorboard", "neptune"), "unknown writer 'neptune'; valid: tensorboard, wandb, mlflow"),
                         (("tensorboard", "tensorboard"), "lists a writer twice"), ("tensorboard", "must be a tuple")):
        config.logging = ml_collections.ConfigDict({"writers": bad})  # a whole section: any type
        with pytest.raises(validate.ConfigError, match=f"^logging.writers: {message}"):
            validate.validate_config(config, num_devices=1, process_count=1)
    config.logging = ml_collections.ConfigDict({"writers": ()})
    validate.validate_config(config, num_devices=1, process_count=1)  # metrics.jsonl only is fine
    assert make_config().logging.writers == ("tensorboard",)


def _wandb_records(path: pathlib.Path) -> list:
    """The protobuf records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB-log chunks
    (crc32 4 bytes, length 2, type 1: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _written_records(run_file: pathlib.Path, *, timeout_s: float = 60.0) -> list:
    """The records once the run's last one, its exit, is on disk: wandb's service writes the file a moment after
    `finish()` returns."""
    deadline = time.monotonic() + timeout_s
    from google.protobuf.message import DecodeError
    while True:
        try:
            records = _wandb_records(run_file)
        except DecodeError:  # a record half written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_history(run_file: pathlib.Path) -> dict[int, dict[str, object]]:
    history: dict[int, dict[str, object]] = {}
    for record in _written_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items: dict[str, object] = {}
            for item in record.history.item:  # an image is logged as nested keys (name, field)
                *parents, leaf = list(item.nested_key) or [item.key]
                node = items
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = json.loads(item.value_json)
            history.setdefault(items["_step"], {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return history


def test_wandb_offline_run_holds_the_logged_values_and_a_resumed_run_keeps_its_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = {"writers": ("wandb",), "wandb": {"project": "seg_jax_test", "entity": None, "mode": None, "tags": ("t",)}}
    _log_a_run(workdir, cfg)
    run_id = json.loads((workdir / trackers.IDS_FILE).read_text())["wandb"]
    (first,) = (workdir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history = _wandb_history(first)
    assert history.get(2) == {"train/loss": 0.5}, history  # the NaN is not sent
    assert {k: v for k, v in history[4].items() if k != "val/predictions"} == {"val/mean_iou": 0.25,
                                                                                "val/iou/disc": 0.125}
    assert history[4]["val/predictions"]["_type"] == "image-file"
    assert history[4]["val/predictions"]["width"] == 8
    (run,) = [r.run for r in _written_records(first) if r.WhichOneof("record_type") == "run"]
    assert run.run_id == run_id and run.display_name == "tiny" and run.project == "seg_jax_test"
    assert list(run.tags) == ["t"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["model.name"] == "unet" and config["train.steps"] == 4

    # W&B names an offline run directory by its start second: a resume within the same second would reuse it
    time.sleep(1.05 - time.time() % 1)
    _log_a_run(workdir, cfg, steps=((6, "train", {"train/loss": 0.0625}),))  # resumed: the same W&B run
    # offline, the resumed run is a second run directory under the same run id
    files = sorted((workdir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2 and [_wandb_history(f).get(6) for f in files] == [None, {"train/loss": 0.0625}]


def test_mlflow_run_holds_the_logged_values_and_a_resumed_run_logs_into_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3 refuses file stores without it
    uri = f"file:{tmp_path / 'mlruns'}"
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = {"writers": ("mlflow",), "mlflow": {"tracking_uri": uri, "experiment": "seg_jax_test"}}
    _log_a_run(workdir, cfg)
    _log_a_run(workdir, cfg, steps=((6, "train", {"train/loss": 0.0625}),))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("seg_jax_test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == json.loads((workdir / trackers.IDS_FILE).read_text())["mlflow"]
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params == {"model.name": "unet", "train.steps": "4"}
    history = lambda key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
    assert history("train.loss") == [(2, 0.5), (6, 0.0625)]  # MLflow's keys: "/" → "."
    assert history("val.iou.disc") == [(4, 0.125)] and history("train.bad") == []
    (picture,) = client.list_artifacts(run.info.run_id, "pictures/val")
    assert picture.path == "pictures/val/predictions_step4.png"
    local = client.download_artifacts(run.info.run_id, picture.path, str(tmp_path / "down"))
    from PIL import Image
    np.testing.assert_array_equal(np.asarray(Image.open(local)), PICTURE)


def test_a_training_run_sends_its_evaluation_to_mlflow(tmp_path, monkeypatch, make_config):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from seg_jax import train
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    config = make_config()
    config.logging.writers = ("tensorboard", "mlflow")
    config.logging.mlflow.tracking_uri = f"file:{tmp_path / 'mlruns'}"
    scalars = train.train_and_evaluate(config, tmp_path / "run")
    client = MlflowClient(tracking_uri=config.logging.mlflow.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("seg_jax").experiment_id])
    (last,) = [m for m in client.get_metric_history(run.info.run_id, "val.mean_iou") if m.step == 4]
    assert last.value == pytest.approx(scalars["val/mean_iou"], rel=1e-6)
    assert run.data.params["logging.writers"] == str(["tensorboard", "mlflow"])
    terms = {f"train.loss.{name}" for name in config.loss}  # a key and its sub-keys, one per loss term
    assert terms and {"train.loss", *terms} <= set(run.data.metrics)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
