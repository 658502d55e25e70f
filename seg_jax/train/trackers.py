"""Where a run's scalars and pictures go besides `metrics.jsonl`: the writers named in `config.logging.writers`,
any of "tensorboard" (the default: event files in `<workdir>/tensorboard`), "wandb" (Weights & Biases) and
"mlflow". Each library is imported only when its writer is listed.

Options (`config.logging.<writer>`):
    wandb   project, entity (None: the account's default), mode (None: wandb's own, i.e. $WANDB_MODE or
            "online"; "offline" writes only `<workdir>/wandb/`), tags. Files go under `<workdir>/wandb/`.
    mlflow  tracking_uri (None: MLflow's own, i.e. $MLFLOW_TRACKING_URI or its default), experiment (name,
            created when missing). MLflow >= 3 refuses a `file:` URI unless MLFLOW_ALLOW_FILE_STORE=true.

A W&B or MLflow run is created once per workdir and its id kept in `<workdir>/trackers.json`, so that a resumed
run logs into the same W&B / MLflow run. The run's flat config becomes the W&B config and the MLflow parameters
(logged when the MLflow run is created). Scalars keep their names (`val/iou/disc`) except in MLflow, which gets
`val.iou.disc` (`mlflow_key`). Pictures are W&B images, MLflow artifacts `pictures/<name>_step<N>.png`.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np

WRITERS = ("tensorboard", "wandb", "mlflow")
# module imported → the pip package that provides it
PACKAGES = {"tensorboard": ("tensorboardX", "tensorboardX"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}
IDS_FILE = "trackers.json"
MLFLOW_PARAM_LENGTH, MLFLOW_BATCH = 6000, 100  # MLflow's limits: characters of a parameter value, params per call


class MissingPackageError(ImportError):
    """A listed writer whose package is not installed; the message names the pip package."""


def missing_package(name: str) -> str | None:
    """"pip install <package>" when writer `name`'s package is not importable, else None."""
    module, package = PACKAGES[name]
    return None if importlib.util.find_spec(module) else f"pip install {package}"


def _import(name: str):
    install = missing_package(name)
    if install:
        raise MissingPackageError(f"config.logging.writers lists {name!r}, whose package is not installed: {install}")
    return importlib.import_module(PACKAGES[name][0])


def _ids(workdir: pathlib.Path) -> dict[str, str]:
    path = workdir / IDS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _keep_id(workdir: pathlib.Path, name: str, run_id: str) -> None:
    (workdir / IDS_FILE).write_text(json.dumps({**_ids(workdir), name: run_id}, indent=2, sort_keys=True))


class TensorBoardWriter:
    """Event files in `<workdir>/tensorboard` (tensorboardX: no TensorFlow needed)."""

    def __init__(self, workdir: pathlib.Path, **_):
        self._tb = _import("tensorboard").SummaryWriter(str(workdir / "tensorboard"))

    def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        self._tb.add_image(name, image, step, dataformats="HWC")
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()


class WandbWriter:
    """One W&B run per workdir (`wandb.init(resume="allow")` with the id kept in trackers.json)."""

    def __init__(self, workdir: pathlib.Path, *, options: Mapping[str, Any], name: str, run_config: dict):
        wandb = _import("wandb")
        self._wandb = wandb
        self._run = wandb.init(project=options.get("project"), entity=options.get("entity"), name=name,
                               id=_ids(workdir).get("wandb"), resume="allow", dir=str(workdir),
                               mode=options.get("mode"), tags=list(options.get("tags") or ()), config=run_config,
                               settings=wandb.Settings(console="off"))  # our console stays ours
        _keep_id(workdir, "wandb", self._run.id)

    def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log(dict(scalars), step=step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        self._run.log({name: self._wandb.Image(image)}, step=step)

    def close(self) -> None:
        self._run.finish()


def mlflow_key(name: str) -> str:
    """The MLflow metric key of scalar `name`: "/" → "." (`train/loss/dice` → `train.loss.dice`). MLflow's file
    store keeps a key as a path, where `train/loss` could not be both a file and the folder of `train/loss/dice`."""
    return name.replace("/", ".")


class MlflowWriter:
    """One MLflow run per workdir in experiment `options.experiment`, through `MlflowClient` (no global state)."""

    def __init__(self, workdir: pathlib.Path, *, options: Mapping[str, Any], name: str, run_config: dict):
        _import("mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        self._client = client = MlflowClient(tracking_uri=options.get("tracking_uri"))
        self._run_id = _ids(workdir).get("mlflow")
        if self._run_id is None:
            experiment = client.get_experiment_by_name(options["experiment"])
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(options["experiment"]))
            self._run_id = client.create_run(experiment_id, run_name=name,
                                             tags={"workdir": str(workdir.resolve())}).info.run_id
            _keep_id(workdir, "mlflow", self._run_id)
            params = [Param(k, str(v)[:MLFLOW_PARAM_LENGTH]) for k, v in sorted(run_config.items())]
            for i in range(0, len(params), MLFLOW_BATCH):
                client.log_batch(self._run_id, params=params[i:i + MLFLOW_BATCH])
        else:
            client.update_run(self._run_id, status="RUNNING")

    def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(mlflow_key(k), float(v), now, step)
                                                      for k, v in scalars.items()])

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        self._client.log_image(self._run_id, image, artifact_file=f"pictures/{name}_step{step}.png")

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


_CLASSES = {"tensorboard": TensorBoardWriter, "wandb": WandbWriter, "mlflow": MlflowWriter}


def create_writers(names: Sequence[str], workdir: str | pathlib.Path, *, options: Mapping[str, Any] | None = None,
                   name: str = "run", run_config: dict | None = None) -> list:
    """The writers `names` (of `WRITERS`) for `workdir`, each with its `options[<writer>]`; `name` is the W&B /
    MLflow run name and `run_config` (flat `{dotted.key: value}`) their config / parameters.

    Raises:
        ValueError: a name not in `WRITERS`.
        MissingPackageError: a writer's package is not installed (the message says what to pip install).
    """
    workdir = pathlib.Path(workdir)
    unknown = [n for n in names if n not in _CLASSES]
    if unknown:
        raise ValueError(f"config.logging.writers: unknown writer(s) {', '.join(map(repr, unknown))}; valid: "
                         f"{', '.join(WRITERS)}")
    options = options or {}
    return [_CLASSES[n](workdir, options=dict(options.get(n) or {}), name=name, run_config=dict(run_config or {}))
            for n in names]
