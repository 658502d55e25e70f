"""The whole config checked before anything is written: one `ConfigError(field, message)` for the first problem.

Two stages, both before the first file of a run:

    validate_config(config, num_devices=..., process_count=...)   # pure: sizes, divisibility, registered names
    dataset = resolve_dataset(config)                              # data.resolve, its errors naming the field
    validate_with_dataset(config, dataset, evaluators)             # splits, eval image sizes, best_metric

`launch.py` prints a `ConfigError` as one line `error: <field>: <message>` and exits with status 2.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
from typing import Any, Sequence

import ml_collections
import numpy as np

from seg_jax.data.config import DATASET_DEFAULTS, DISTANCE_TARGETS, NORMALIZATIONS


class ConfigError(ValueError):
    """A config field with a bad value; `str()` is `"<field>: <message>"`."""

    def __init__(self, field: str, message: str):
        for named in (f"config.{field}: ", f"{field}: "):  # a library message that already starts with the field
            message = message[len(named):] if message.startswith(named) else message
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# How library error messages name config fields: `config.evals.val: unknown option ...`, `unknown
# config.schedule.name ...`, `data.folder.num_classes must be set ...`, `config.loss is empty`, `loss 'dice' has no
# option ...`, `unknown model 'unet3d' ...`.
_DOTTED = re.compile(r"\b(?:config\.)?((?:data|evals|train|model|loss|schedule|optimizer|crf_layer)(?:\.\w+)+)")
_SECTION = re.compile(r"\bconfig\.(\w+)")
_NAMED = (("unknown model '", "model.name"), ("unknown task '", "task"), ("unknown dataset '", "data.name"),
          ("model '", "model"))


def field_of(message: str, *, default: str) -> str:
    """The config field a library error message is about (`default` when it names none)."""
    found = _DOTTED.search(message) or _SECTION.search(message)
    if found:
        return found.group(1)
    for start, field in _NAMED:
        if message.startswith(start):
            return field
    loss = re.match(r"loss '(\w+)'", message)
    if loss:
        return f"loss.{loss.group(1)}"
    return "loss" if re.search(r"\bloss\b", message) else default


def _check_number(field: str, value: Any, *, minimum: float, integer: bool = True) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(field, f"must be {kind} >= {minimum:g}, got {value!r}")


def _number(config: Any, field: str, *, minimum: float, integer: bool = True, optional: bool = False) -> None:
    value = _get(config, field)
    if not (value is None and optional):
        _check_number(field, value, minimum=minimum, integer=integer)


def _get(config: Any, field: str) -> Any:
    value = config
    for key in field.split("."):
        value = value.get(key, None) if hasattr(value, "get") else None
    return value


def _size(config: Any, field: str, *, optional: bool = False) -> None:
    value = _get(config, field)
    if value is None and optional:
        return
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(field, f"must be (height, width) in pixels, both positive integers, got {value!r}")


def _divisible(field: str, value: int, *, num_devices: int, process_count: int) -> None:
    shards = num_devices * process_count
    if value % shards:
        raise ConfigError(field, f"{value} is not a multiple of the {num_devices} device(s) x {process_count} "
                                 f"process(es) = {shards} that share each batch")


def _one_of(config: Any, field: str, valid: Sequence[Any]) -> None:
    value = _get(config, field)
    if value not in valid:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(map(repr, valid))}")


def _intensity(config: Any) -> None:
    """`data.folder.intensity` (method, low, high) as the folder converter checks it."""
    from seg_jax.data.sources.image_files import FolderDatasetError, intensity_scaling
    intensity = config.data.get("folder", {}).get("intensity", None) or {}
    try:
        intensity_scaling(*(intensity.get(key, None) for key in ("method", "low", "high")))
    except FolderDatasetError as e:
        raise ConfigError("data.folder.intensity", str(e)) from None


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int,
                    training: bool = True) -> None:
    """Checks everything about `config` that needs no data files: positive sizes, batch sizes divisible by
    `num_devices` (local devices per process) x `process_count`, registered names (dataset, model, task, loss
    terms and options, optimiser, schedule, evaluator types and options).

    `training=False` (`--mode=eval`) skips what only training reads (train batch size, cadences, schedule).

    Raises:
        ConfigError: the first bad field.
    """
    from seg_jax import evaluators, models, tasks
    from seg_jax.train import optim

    _number(config, "seed", minimum=0)
    _number(config, "init_seed", minimum=0, optional=True)
    _one_of(config, "data.name", sorted(DATASET_DEFAULTS))
    _size(config, "data.crop_size")
    _size(config, "data.eval_size", optional=True)
    _one_of(config, "data.targets", ("semantic", "border"))
    _intensity(config)
    _one_of(config, "data.distance_target", DISTANCE_TARGETS)
    for field in ("data.mean", "data.std"):
        value = _get(config, field)
        if not isinstance(value, (tuple, list)) or len(value) != 3 or (field == "data.std" and min(value) <= 0):
            positive = ", positive" if field == "data.std" else ""
            raise ConfigError(field, f"must be 3 per-channel numbers (0..255 units{positive}), got {value!r}")
    _number(config, "data.num_workers", minimum=0)
    _number(config, "data.prefetch", minimum=0)
    _number(config, "data.cache_mb", minimum=0, optional=True)  # absent from configs saved before it
    if training:
        _validate_augment(config)
        _number(config, "train.steps", minimum=1)
        _number(config, "train.batch_size", minimum=1)
        _divisible("train.batch_size", config.train.batch_size, num_devices=num_devices, process_count=process_count)
        for field in ("train.log_every", "train.checkpoint_every"):
            _number(config, field, minimum=0)
        _number(config, "train.keep_checkpoints", minimum=1)
        _number(config, "train.schedule_steps", minimum=1, optional=True)
        _one_of(config, "train.best_mode", ("max", "min"))
        _one_of(config, "optimizer.name", optim.OPTIMIZERS)
        _number(config, "optimizer.learning_rate", minimum=0, integer=False)
        _one_of(config, "schedule.name", optim.SCHEDULES)
        _number(config, "schedule.warmup_steps", minimum=0)
        _validate_writers(_get(config, "logging.writers"))
    _validate_param_group_fields(config)
    _validate_pretrained_fields(config)
    if config.model.name not in models.MODELS:
        raise ConfigError("model.name", f"unknown model {config.model.name!r}; valid names: "
                                        f"{', '.join(models.MODELS.names())}")
    try:
        task = tasks.task_name(config)
    except KeyError as e:
        raise ConfigError("task", e.args[0]) from None
    for name, entry in (config.get("evals", None) or {}).items():
        _validate_eval(name, entry, num_devices=num_devices, process_count=process_count,
                       registry=evaluators.EVALUATORS)
    _validate_builds(config, task=task)


def _validate_augment(config: ml_collections.ConfigDict) -> None:
    """data.augment: known keys, probabilities in [0, 1], ranges (low <= high) inside each transform's domain."""
    from seg_jax.data.pipeline import policy
    try:
        policy.augment_options(config.data.get("augment", None))
    except ValueError as e:
        raise ConfigError(field_of(str(e), default="data.augment"), str(e)) from None


def _validate_writers(names: Any) -> None:
    """`logging.writers`: known names, each once, their packages installed (None: a config saved without it)."""
    from seg_jax.train import trackers
    if names is None:
        return
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise ConfigError("logging.writers", f"must be a tuple of writer names ({', '.join(trackers.WRITERS)}), "
                                             f"got {names!r}")
    for name in names:
        if name not in trackers.WRITERS:
            raise ConfigError("logging.writers", f"unknown writer {name!r}; valid: {', '.join(trackers.WRITERS)}")
        install = trackers.missing_package(name)
        if install:
            raise ConfigError("logging.writers", f"{name!r} needs its package, which is not installed: {install}")
    if len(set(names)) < len(names):
        raise ConfigError("logging.writers", f"lists a writer twice: {tuple(names)!r}")


def _validate_eval(name: str, entry: Any, *, num_devices: int, process_count: int, registry: Any) -> None:
    prefix = f"evals.{name}"
    kind = entry.get("type", None)
    if kind not in registry:
        raise ConfigError(f"{prefix}.type", f"unknown evaluator type {kind!r}; valid names: "
                                            f"{', '.join(registry.names())}")
    cls = registry.get(kind)
    unknown = sorted(set(entry) - set(cls.COMMON) - set(cls.OPTIONS))
    if unknown:
        raise ConfigError(prefix, f"unknown option(s) {', '.join(unknown)} for evaluator type {kind!r}; its "
                                  f"options: {', '.join(sorted({**cls.COMMON, **cls.OPTIONS}))}")
    if "tta" in cls.OPTIONS:
        from seg_jax.predict.tta import tta_options
        tta_options(entry.get("tta", None), field=f"{prefix}.tta")
    batch_size = entry.get("batch_size", cls.COMMON["batch_size"])
    for key, minimum in (("batch_size", 1), ("every", 0), ("num_pictures", 0)):
        _check_number(f"{prefix}.{key}", entry.get(key, cls.COMMON[key]), minimum=minimum)
    _divisible(f"{prefix}.batch_size", batch_size, num_devices=num_devices, process_count=process_count)


def _validate_builds(config: ml_collections.ConfigDict, *, task: str) -> None:
    """Builds the task (model, loss) and the evaluators without data, as a test builds every shipped config,
    turning the registries' errors into `ConfigError`s naming the field."""
    from seg_jax import data, evaluators
    from seg_jax.train.experiment import build_experiment
    try:
        class_names = data.class_names(config.data)
    except (KeyError, ValueError):  # a converted folder dataset: only its files know the classes
        class_names = ("class_0", "class_1")
    try:
        exp = build_experiment(config, num_classes=len(class_names))
        evaluators.build_evaluators(config, task=exp.task, class_names=class_names)
    except (KeyError, ValueError, TypeError) as e:
        message = str(e.args[0]) if e.args else str(e)
        raise ConfigError(field_of(message, default=f"task ({task})"), message) from None
    _validate_backbone(config, exp.backbone)
    _validate_param_groups(config, exp)


def _validate_param_group_fields(config: ml_collections.ConfigDict) -> None:
    """Types of optimizer.decay_norm_and_bias, lr_multipliers ({prefix: factor >= 0}) and frozen (prefixes)."""
    decay = _get(config, "optimizer.decay_norm_and_bias")
    if decay is not None and not isinstance(decay, bool):
        raise ConfigError("optimizer.decay_norm_and_bias", f"must be True or False, got {decay!r}")
    multipliers = _get(config, "optimizer.lr_multipliers") or {}
    if not hasattr(multipliers, "items"):
        raise ConfigError("optimizer.lr_multipliers", f"must be a dict {{path prefix: factor}}, got {multipliers!r}")
    for prefix, factor in multipliers.items():
        _check_number(f"optimizer.lr_multipliers.{prefix}", factor, minimum=0, integer=False)
    frozen = _get(config, "optimizer.frozen") or ()
    if isinstance(frozen, str) or not all(isinstance(p, str) and p for p in frozen):
        raise ConfigError("optimizer.frozen", f"must be a tuple of parameter-path prefixes, got {frozen!r}")


def _validate_param_groups(config: ml_collections.ConfigDict, exp: Any) -> None:
    """Every prefix of optimizer.lr_multipliers / frozen matches a parameter: the optimiser is initialised on the
    model's parameter shapes (tracing only, nothing computed)."""
    import jax
    import jax.numpy as jnp
    if not (config.optimizer.get("lr_multipliers", None) or config.optimizer.get("frozen", None)):
        return
    dummy = jnp.zeros((1, *config.data.crop_size, 3), jnp.float32)
    key = jax.random.key(0, impl="rbg")
    try:
        jax.eval_shape(lambda: exp.tx.init(exp.init_model.init({"params": key, "dropout": key}, dummy,
                                                               train=False)["params"]))
    except ValueError as e:
        message = str(e.args[0]) if e.args else str(e)
        raise ConfigError(field_of(message, default="optimizer"), message) from None


def _validate_pretrained_fields(config: ml_collections.ConfigDict) -> None:
    """Types and ranges of model.pretrained, pretrained_normalization, freeze_bn, freeze_stages (absent = default)."""
    path = _get(config, "model.pretrained")
    if path is not None and not (isinstance(path, str) and path):
        raise ConfigError("model.pretrained", f"must be None or the path of a weights file, got {path!r}")
    normalization = _get(config, "model.pretrained_normalization")
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ConfigError("model.pretrained_normalization", f"{normalization!r} is not one of None, "
                                                            f"{', '.join(map(repr, NORMALIZATIONS))}")
    if not isinstance(_get(config, "model.freeze_bn") or False, bool):
        raise ConfigError("model.freeze_bn", f"must be True or False, got {_get(config, 'model.freeze_bn')!r}")
    if _get(config, "model.freeze_stages") is not None:
        _number(config, "model.freeze_stages", minimum=0)


def _validate_backbone(config: ml_collections.ConfigDict, site: Any) -> None:
    """What model.pretrained / freeze_bn / freeze_stages need of the model's backbone (`site`, None without one),
    of the weights file (exists, a readable kind) and of data.mean / data.std (`pretrained_normalization`)."""
    from seg_jax.models.backbones import weights_file
    path = config.model.get("pretrained", None)
    freeze_stages, freeze_bn = config.model.get("freeze_stages", 0) or 0, config.model.get("freeze_bn", False)
    used = [f for f, on in (("model.pretrained", path), ("model.freeze_bn", freeze_bn),
                            ("model.freeze_stages", freeze_stages)) if on]
    if not used:
        return
    if path and config.train.get("init_from", None):
        raise ConfigError("train.init_from", "set train.init_from or model.pretrained, not both (the run in "
                                             "train.init_from already holds the backbone's weights)")
    if site is None:  # (freeze_bn / freeze_stages already fail to build)
        from seg_jax.train.experiment import no_backbone_message
        raise ConfigError(used[0], no_backbone_message(config, used[0]))
    module = site.module()
    if freeze_stages > module.num_stages:
        raise ConfigError("model.freeze_stages", f"{freeze_stages} exceeds the {module.num_stages} stages of backbone "
                                                 f"{site.name!r} (0 freezes nothing)")
    if freeze_bn and site.options.get("norm") != "batch":
        raise ConfigError("model.freeze_bn", f"the backbone has no BatchNorm to freeze (model.norm="
                                             f"{site.options.get('norm')!r})")
    if not path:
        return
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in weights_file.SUFFIXES:
        raise ConfigError("model.pretrained", f"{path!r} has suffix {suffix!r}; readable: "
                                              f"{', '.join(weights_file.SUFFIXES)}")
    if suffix in (".pth", ".pt") and importlib.util.find_spec("torch") is None:
        raise ConfigError("model.pretrained", f"reading {path!r} needs torch, which is not installed; convert it to "
                                              ".safetensors where torch is")
    if not pathlib.Path(path).is_file():
        raise ConfigError("model.pretrained", f"no file {path!r}")
    if not hasattr(module, "torch_layout"):
        raise ConfigError("model.pretrained", f"backbone {site.name!r} has no pretrained weights (vgg16, resnet50 "
                                              "and resnet101 have)")
    try:
        module.torch_layout()
    except ValueError as e:
        raise ConfigError("model.pretrained", str(e)) from None
    normalization = config.model.get("pretrained_normalization", "imagenet")
    if normalization is not None:
        for field, want in zip(("data.mean", "data.std"), NORMALIZATIONS[normalization]):
            if not np.allclose(_get(config, field), want):
                raise ConfigError(field, f"{tuple(_get(config, field))} differs from the {normalization!r} "
                                         f"normalisation the pretrained weights expect ({want}); set {field}="
                                         f"{want}, or model.pretrained_normalization to the weights' own")


def resolve_dataset(config: ml_collections.ConfigDict):
    """`data.resolve(config.data)`, its config errors (unknown variant, targets a dataset cannot give, a folder
    without sources) as `ConfigError`s; defects of the files themselves (`data.DataError`, label errors, the folder
    importer's) stay what they are."""
    from seg_jax import data, labels
    from seg_jax.data.sources.folder_importer import FolderDatasetError
    try:
        return data.resolve(config.data)
    except (data.DataError, labels.LabelError, FolderDatasetError):
        raise
    except (KeyError, ValueError, FileNotFoundError) as e:
        message = str(e.args[0]) if e.args else str(e)
        raise ConfigError(field_of(message, default="data"), message) from None


def eval_image_sizes(dataset: Any, split: str, *, limit: int = 2) -> list[tuple[int, int]]:
    """The first `limit` distinct image sizes (height, width) in pixels of `split`, in example order."""
    sizes: list[tuple[int, int]] = []
    source = dataset.source(split)
    for i in range(len(source)):
        size = tuple(int(s) for s in source[i]["image"].shape[:2])
        if size not in sizes:
            sizes.append(size)
            if len(sizes) >= limit:
                break
    return sizes


def validate_with_dataset(config: ml_collections.ConfigDict, dataset: Any, evaluators: Sequence[Any], *,
                          scalar_names: Sequence[str] | None = None, training: bool = True) -> None:
    """What needs the resolved dataset: the training split and every evaluator's split exist, evaluators needing
    instance ids get them, an evaluation split of mixed image sizes has `data.eval_size`, and (training)
    `train.best_metric` is one of `scalar_names`.

    Raises:
        ConfigError: the first bad field.
    """
    if training:
        check_split(dataset, config.data.train_split, "data.train_split")
    sized: set[str] = set()
    for ev in evaluators:
        own = (config.get("evals", None) or {}).get(ev.name, {}).get("split", None)
        field = f"evals.{ev.name}.split" if own else "data.eval_split"
        try:
            ev_dataset = ev.dataset_for(dataset)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"evals.{ev.name}.data_version", str(e.args[0]) if e.args else str(e)) from None
        check_split(ev_dataset, ev.split, field)
        try:
            ev.validate(dataset)
        except (KeyError, ValueError, NotImplementedError) as e:
            raise ConfigError(f"evals.{ev.name}", str(e.args[0]) if e.args else str(e)) from None
        if config.data.get("eval_size", None) is None and (ev_dataset.version, ev.split) not in sized:
            sized.add((ev_dataset.version, ev.split))
            sizes = eval_image_sizes(ev_dataset, ev.split)
            if len(sizes) > 1:
                raise ConfigError("data.eval_size", f"split {ev.split!r} ({field}) has images of different sizes "
                                  f"({' and '.join(f'{h}x{w}' for h, w in sizes)} px, ...) and eval batches need one "
                                  "size; set data.eval_size=(height, width)")
    if training and scalar_names is not None and config.train.best_metric not in scalar_names:
        headline = [n for n in scalar_names if n.count("/") == 1]
        example = next((n for n in scalar_names if n.count("/") > 1), "-")
        raise ConfigError("train.best_metric", f"{config.train.best_metric!r} is not a scalar of the configured "
                          f"evaluators (config.evals); valid: {', '.join(headline)} and per-class ones such as "
                          f"{example}")


def check_split(dataset: Any, split: str, field: str) -> None:
    """Raises a ConfigError naming `field` when `dataset` has no split `split` (slices such as "train[:8]" work)."""
    try:
        dataset.source(split)
    except KeyError as e:
        raise ConfigError(field, e.args[0]) from None
