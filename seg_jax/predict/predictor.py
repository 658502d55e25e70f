"""A trained run ready to predict any image size: its model and checkpoint restored, its predict options checked,
and `predict_image` (tiles → blended logits → labels, probabilities, instances; or merged detections)."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from scipy import special

from seg_jax import data, postprocess
from seg_jax.predict import config as predict_config, detections as dets, tiling
from seg_jax.predict.tta import is_off, tta_options, with_tta
from seg_jax.train import validate, workdir as wd
from seg_jax.train.checkpoints import open_for_reading
from seg_jax.train.experiment import build_experiment
from seg_jax.train.state import create_train_state, restore_target
from seg_jax.train.validate import ConfigError
from seg_jax.tune.tuned import apply_tuned


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the model says about one image `[H, W]`.

    labels: int32 `[H, W]` class ids. probabilities: float32 `[H, W, N]` softmax, semantic tasks (None otherwise).
    instances: int32 `[H, W]` ids 0..K for instance configs, else None; scores float32 `[K]` and classes int32 `[K]`
    of ids 1..K; boxes float `[K, 4]` (x1, y1, x2, y2 pixels) for detection models, else None.
    tiles: how many tiles the image took.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    instances: np.ndarray | None = None
    scores: np.ndarray | None = None
    classes: np.ndarray | None = None
    boxes: np.ndarray | None = None
    tiles: int = 1


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A restored run: `apply(variables, tiles float32 [b, T, T, 3])` is the task's `predict` (through the test-time
    augmentation `predict.tta` when it is on: log-probabilities, `seg_jax.predict.tta`), compiled (`jax.jit`);
    `align` pixels the model's input multiple (`model.input_multiple`); `options` the checked `predict` section;
    `instance_options` the chosen `evals` entry's `(per_class, options)` for a semantic instance config, else None;
    `intensity` the scaling of 16-bit / float images to 8 bits that the training images had (`image_intensity`);

    `apply_with_distance`, when those options read the predicted distance map ("predicted_distance" markers or
    elevation), the network's class logits and distance map stacked `[b, T, T, N + 1]` (compiled), which instance
    prediction blends over tiles in place of `apply`'s logits."""

    task_name: str
    apply: Callable[[Any, np.ndarray], Any]
    variables: Any
    align: int
    options: ml_collections.ConfigDict
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    instance_options: tuple[bool, dict] | None
    step: int
    intensity: dict | None = None
    apply_with_distance: Callable[[Any, np.ndarray], Any] | None = None

    def predict_tiles(self, tiles: np.ndarray) -> Any:
        """The task's outputs for tiles float32 `[b, T, T, 3]`, as numpy (semantic: logits `[b, T, T, N]`)."""
        return jax.device_get(self.apply(self.variables, tiles))

    @property
    def has_instances(self) -> bool:
        return self.task_name == "detection" or self.instance_options is not None


def _check_number(field: str, value: Any, *, low: float, high: float | None = None, integer: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low and (
        high is None or value <= high) and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(field, f"must be {kind} {bound}, got {value!r}")


def check_options(options: ml_collections.ConfigDict, *, multiple: int, model: str) -> None:
    """Raises `ConfigError` naming the first bad `predict.*` field (unknown keys included)."""
    unknown = sorted(set(options) - set(predict_config.base_config()))
    if unknown:
        raise ConfigError(f"predict.{unknown[0]}", f"unknown predict option; valid: "
                                                   f"{', '.join(sorted(predict_config.base_config()))}")
    _check_number("predict.tile_size", options.tile_size, low=1, integer=True)
    if options.tile_size % multiple:
        raise ConfigError("predict.tile_size", f"{options.tile_size} is not a multiple of {multiple}, the size "
                                               f"model {model!r} pads its input to; e.g. "
                                               f"{max(multiple, options.tile_size // multiple * multiple)}")
    _check_number("predict.overlap", options.overlap, low=0, high=options.tile_size - multiple, integer=True)
    if options.blend not in predict_config.BLENDS:
        raise ConfigError("predict.blend", f"{options.blend!r} is not one of {', '.join(predict_config.BLENDS)}")
    _check_number("predict.gaussian_sigma", options.gaussian_sigma, low=1e-3, integer=False)
    _check_number("predict.batch_size", options.batch_size, low=1, integer=True)
    _check_number("predict.overlay_alpha", options.overlay_alpha, low=0, high=1, integer=False)
    _check_number("predict.merge_overlap", options.merge_overlap, low=0, high=1, integer=False)
    tta_options(options.tta, field="predict.tta")


def instance_options(config: ml_collections.ConfigDict) -> tuple[bool, dict] | None:
    """`(per_class, options)` of the `evals` entry of type "instances" named by `predict.instances` (default: the
    first one), or None when there is none."""
    entries = {name: e for name, e in (config.get("evals", None) or {}).items() if e.get("type", None) == "instances"}
    chosen = config.predict.instances
    if chosen is None:
        if not entries:
            return None
        chosen = next(iter(entries))
    if chosen not in entries:
        raise ConfigError("predict.instances", f"{chosen!r} is not an evals entry of type 'instances'; those are: "
                                               f"{', '.join(entries) or 'none'}")
    entry = entries[chosen]
    options = entry.get("options", None) or {}
    return bool(entry.get("per_class", False)), dict(options.to_dict() if hasattr(options, "to_dict") else options)


def run_config(config: ml_collections.ConfigDict | None, workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The config to predict with: the run's own `config.json` when `config` is None, else `config` once it
    computes what the run computes (`workdir.check_eval_config`); with its `predict` section completed."""
    if config is None:
        config = wd.read_config(workdir)
    else:
        config = wd.check_eval_config(config, workdir)
        config = config.copy_and_resolve_references()
    return predict_config.with_defaults(config)


def image_intensity(config: ml_collections.ConfigDict) -> dict | None:
    """How new 16-bit / float images become 8-bit (`data.sources.image_files.read_image`): for a folder dataset the
    scaling stored with its conversion (`data.folder.intensity` when the conversion is not on this machine), else
    None (such images are refused)."""
    if config.data.name != "folder":
        return None
    from seg_jax.data.sources import folder_importer
    path = folder_importer.dataset_dir(config.data.data_dir, config.data.variant)
    if folder_importer.folder_record.stored_record(path) is not None:
        return folder_importer.stored_intensity(path)
    return folder_importer.intensity_option(config.data.folder.get("intensity", None))


def _class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    try:
        return data.class_names(config.data)
    except (KeyError, ValueError):  # a converted folder dataset: only its files know the classes
        return validate.resolve_dataset(config).class_names


def _built(config: ml_collections.ConfigDict):
    """(experiment, class names, input multiple) of a config with its `predict` section, all of it checked."""
    validate.validate_config(config, num_devices=jax.local_device_count(), process_count=jax.process_count(),
                             training=False)
    class_names = _class_names(config)
    exp = build_experiment(config, num_classes=len(class_names))
    align = int(exp.init_model.input_multiple)
    check_options(config.predict, multiple=align, model=config.model.name)
    if exp.task.name != "semantic" and not is_off(tta_options(config.predict.tta, field="predict.tta")):
        raise ConfigError("predict.tta", f"test-time augmentation is for semantic models; task {exp.task.name!r} "
                                         "predicts instances whose boxes a flip or scale would move")
    return exp, tuple(class_names), align


def _state_options(exp, config: ml_collections.ConfigDict) -> dict:
    """The state's arguments shared by `create_train_state` (fresh parameters) and `restore_target` (restored)."""
    return dict(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx,
                image_shape=tuple(config.data.crop_size))


def _with_distance(exp, chosen: tuple[bool, dict] | None, tta: dict) -> Callable | None:
    """`Predictor.apply_with_distance` of a distance model whose instance options read its map, else None."""
    if chosen is None or not any(chosen[1].get(k) == "predicted_distance" for k in ("markers", "elevation")):
        return None
    if not is_off(tta):
        raise ConfigError("predict.tta", "test-time augmentation averages class probabilities only, and the instance "
                                         "options read the predicted distance map too: turn predict.tta off")

    def stacked(variables, tiles):
        outputs = exp.task.predict_outputs(variables, tiles)
        return jax.numpy.concatenate([outputs["logits"], outputs["distance"][..., None]], axis=-1)
    return jax.jit(stacked)


def _assembled(config: ml_collections.ConfigDict, exp, *, class_names: tuple[str, ...], align: int,
               variables: dict, step: int) -> Predictor:
    tta = tta_options(config.predict.tta, field="predict.tta")
    chosen = instance_options(config) if exp.task.name == "semantic" else None
    return Predictor(task_name=exp.task.name, apply=jax.jit(with_tta(exp.task.predict, tta)),  # [batch_size, T, T, 3]
                     variables=jax.device_put(variables), align=align, options=config.predict,
                     class_names=class_names, mean=tuple(config.data.mean), std=tuple(config.data.std),
                     instance_options=chosen, step=int(step), intensity=image_intensity(config),
                     apply_with_distance=_with_distance(exp, chosen, tta))


def load_predictor(config: ml_collections.ConfigDict | None, workdir: str | pathlib.Path, *,
                   which: str = "latest", use_tuned: bool = True) -> Predictor:
    """The latest (or best) checkpoint of `workdir` ready to predict (see `run_config` for `config`). Needs the
    run's data only for a converted folder dataset without `data.folder.num_classes` (for its class names).

    `use_tuned`: the instances entry's post-processing options from its tuned file (`<workdir>/tuned/<entry>.json`,
    `--mode=tune`) when there is one (`seg_jax.tune.tuned.apply_tuned`); False: the config's.

    Raises:
        workdir.NotARunError / ConfigMismatchError, checkpoints.NoCheckpointError, validate.ConfigError.
    """
    workdir = pathlib.Path(workdir)
    config, _ = apply_tuned(run_config(config, workdir), workdir, use_tuned=use_tuned)
    exp, class_names, align = _built(config)
    ckpts = open_for_reading(workdir, config, which=which, purpose="predict with")
    try:
        state, _, step = ckpts.restore_readable(restore_target(**_state_options(exp, config)), which=which)
    finally:
        ckpts.close()
    return _assembled(config, exp, class_names=class_names, align=align, variables=state.variables, step=step)


def initial_predictor(config: ml_collections.ConfigDict) -> Predictor:
    """A predictor with `config`'s freshly initialised parameters (seed `config.seed`), for benchmarks: the same
    shapes, tiles and memory as a trained run of it."""
    config = predict_config.with_defaults(config.copy_and_resolve_references())
    exp, class_names, align = _built(config)
    return _assembled(config, exp, class_names=class_names, align=align,
                      variables=create_train_state(seed=config.seed, **_state_options(exp, config)).variables, step=0)


def _semantic(image: np.ndarray, predictor: Predictor, *, with_probabilities: bool) -> Prediction:
    o = predictor.options
    weights = tiling.blend_weights(o.tile_size, blend=o.blend, overlap=o.overlap, gaussian_sigma=o.gaussian_sigma)
    predict_tiles, distance = predictor.predict_tiles, None
    if predictor.apply_with_distance is not None:  # the distance map blended over tiles like the logits
        predict_tiles = lambda tiles: jax.device_get(predictor.apply_with_distance(predictor.variables, tiles))
    logits = tiling.blended_logits(image, predict_tiles, tile_size=o.tile_size, overlap=o.overlap,
                                   align=predictor.align, weights=weights, batch_size=o.batch_size,
                                   mean=predictor.mean, std=predictor.std)
    if predictor.apply_with_distance is not None:
        logits, distance = logits[..., :-1], logits[..., -1]
    labels = logits.argmax(-1).astype(np.int32)
    tiles = tiling.tile_count(*image.shape[:2], tile_size=o.tile_size, overlap=o.overlap, align=predictor.align)
    if not (with_probabilities or predictor.instance_options):
        return Prediction(labels=labels, probabilities=None, tiles=tiles)
    probabilities = special.softmax(logits, axis=-1).astype(np.float32)
    del logits
    if predictor.instance_options is None:
        return Prediction(labels=labels, probabilities=probabilities, tiles=tiles)
    per_class, options = predictor.instance_options
    # once on the stitched probabilities: an object cut by a tile border is one instance by construction
    instances, scores, class_of = postprocess.instances_with_scores(probabilities, distance, per_class=per_class,
                                                                    **options)
    return Prediction(labels=labels, probabilities=probabilities, instances=instances, scores=scores,
                      classes=class_of[1:], tiles=tiles)


def _detection(image: np.ndarray, predictor: Predictor) -> Prediction:
    o = predictor.options
    size = image.shape[:2]
    found, tile = [], 0
    for tiles, corners in tiling.tile_batches(image, tile_size=o.tile_size, overlap=o.overlap, align=predictor.align,
                                              batch_size=o.batch_size, mean=predictor.mean, std=predictor.std):
        outputs = predictor.predict_tiles(tiles)
        for i, corner in enumerate(corners):
            found += dets.tile_detections({k: np.asarray(v[i]) for k, v in outputs.items()}, corner=corner,
                                          tile=tile, image_size=size)
            tile += 1
    kept = dets.merge(found, min_overlap=o.merge_overlap)
    instances = dets.instance_map(kept, image_size=size)
    classes = np.asarray([d.label for d in kept], np.int32)
    labels = np.concatenate([[0], classes]).astype(np.int32)[instances]
    return Prediction(labels=labels, probabilities=None, instances=instances,
                      scores=np.asarray([d.score for d in kept], np.float32), classes=classes,
                      boxes=np.asarray([d.box for d in kept], np.float64).reshape(-1, 4), tiles=tile)


def predict_image(image: np.ndarray, predictor: Predictor, *, with_probabilities: bool = False) -> Prediction:
    """The prediction of uint8 `image` `[H, W, 3]` (any size), by tiles of `predict.tile_size` pixels.

    Semantic: the tiles' logits blended (`tiling.blended_logits`); labels their argmax; probabilities (when asked
    for, or for instances) their softmax; instances by the chosen `evals` entry's post-processing, run once on the
    whole image. Detection: each tile's detections in image coordinates, merged across overlaps
    (`detections.merge`); labels the class of each pixel's instance.
    """
    if predictor.task_name == "detection":
        return _detection(image, predictor)
    return _semantic(image, predictor, with_probabilities=with_probabilities)
