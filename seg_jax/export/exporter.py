"""`export_run`: a trained run's predict function serialised with `jax.export` (StableHLO), with what a user needs
to call it elsewhere in `export.json`.

The exported function takes uint8 RGB images `[B, H, W, 3]` and normalises them inside (the config's mean/std, as
`augment.normalize` does for training and prediction), so a caller needs no preprocessing code. The parameters
are constants of the function: `model.jaxexport` is self-contained.

Sizes: the batch is symbolic (any B) unless fixed by `batch`. Semantic models take any H, W (symbolic; the model
pads to its input multiple and crops back, as it does in training); a model whose shapes jax cannot trace
symbolically is exported at the fixed `predict.tile_size` instead, with a logged warning. Mask R-CNN (the
detection task) is exported at a fixed size — `image_size` or `predict.tile_size` — since its anchors and output
masks `[B, K, H, W]` are laid out for one image size; tile larger images as `seg_jax.predict` does.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from jax import export as jax_export

from seg_jax.data.pipeline import augment
from seg_jax.export.loader import FORMAT, METADATA_FILE, MODEL_FILE, ExportError
from seg_jax.predict.predictor import Predictor, load_predictor
from seg_jax.train import workdir as wd

DETECTION_OUTPUTS = {
    "boxes": "float32 [B, K, 4] x1, y1, x2, y2 pixels",
    "scores": "float32 [B, K]",
    "classes": "int32 [B, K] class ids (0 is background, never detected)",
    "valid": "bool [B, K]: which of the K slots hold a detection",
    "masks": "float32 [B, K, H, W] mask probabilities in image coordinates (threshold at 0.5)",
}


def predict_function(predictor: Predictor) -> Callable[[jax.Array], Any]:
    """uint8 images `[B, H, W, 3]` -> the task's outputs, normalisation included: semantic float32 softmax
    probabilities `[B, H, W, N]`; detection the dict of `DETECTION_OUTPUTS`."""
    variables, mean, std = predictor.variables, predictor.mean, predictor.std

    def predict(images: jax.Array) -> Any:
        outputs = predictor.apply(variables, augment.normalize(images, mean=mean, std=std))
        if predictor.task_name == "detection":
            return {name: outputs[name] for name in DETECTION_OUTPUTS}
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)

    return predict


def input_struct(*, batch: int | None, image_size: tuple[int, int] | None) -> jax.ShapeDtypeStruct:
    """uint8 `[B, H, W, 3]`, each of B (`batch`) and H, W (`image_size`) symbolic where None."""
    height, width = ("h", "w") if image_size is None else image_size
    shape = jax_export.symbolic_shape(f"{'b' if batch is None else batch}, {height}, {width}")
    return jax.ShapeDtypeStruct((*shape, 3), jnp.uint8)


def _check_sizes(*, batch: Any, image_size: Any) -> tuple[int, int] | None:
    def positive(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if batch is not None and not positive(batch):
        raise ExportError(f"batch must be a positive integer or None (any batch size), got {batch!r}")
    if image_size is None:
        return None
    if not (isinstance(image_size, Sequence) and len(image_size) == 2 and all(positive(s) for s in image_size)):
        raise ExportError(f"image_size must be (height, width) in pixels or None (any size), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def export_predictor(predictor: Predictor, *, image_size: tuple[int, int] | None = None, batch: int | None = None,
                     platforms: Sequence[str] | None = None) -> jax_export.Exported:
    """`predict_function(predictor)` exported for inputs of `input_struct` (see the module docstring for sizes).

    platforms: the backends the export runs on ("cpu", "cuda", "rocm", "tpu"), default the current one.
    """
    image_size = _check_sizes(batch=batch, image_size=image_size)
    fn = jax.jit(predict_function(predictor))

    def exported(size: tuple[int, int] | None) -> jax_export.Exported:
        return jax_export.export(fn, platforms=platforms)(input_struct(batch=batch, image_size=size))

    tile = (int(predictor.options.tile_size),) * 2
    if image_size is not None:
        return exported(image_size)
    if predictor.task_name == "detection":
        logging.info("Mask R-CNN exports at a fixed image size: %d x %d px (predict.tile_size)", *tile)
        return exported(tile)
    try:
        return exported(None)
    except Exception as e:  # shape polymorphism not traceable through this model: one fixed size still is
        logging.warning("this model cannot be exported for any image size (%s: %s); exported at the fixed %d x %d "
                        "px of predict.tile_size instead (choose with image_size=(H, W) or "
                        "--config.predict.tile_size)", type(e).__name__, str(e).splitlines()[0][:300], *tile)
        return exported(tile)


def _dims(shape: Sequence[Any]) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in shape]


def metadata(predictor: Predictor, exported: jax_export.Exported, *, model: str,
             source: dict[str, Any]) -> dict[str, Any]:
    """The contents of `export.json`: how to call `exported` and what comes back, where it came from."""
    shape = _dims(exported.in_avals[0].shape)
    num_classes = len(predictor.class_names)
    if predictor.task_name == "detection":
        outputs = DETECTION_OUTPUTS
    else:
        outputs = {"probabilities": f"float32 [B, H, W, {num_classes}] softmax over class_names"}
    postprocess = None
    if predictor.instance_options is not None:
        per_class, options = predictor.instance_options
        postprocess = {"type": "instances", "function": "seg_jax.postprocess.instances_with_scores",
                       "per_class": per_class, "options": options,
                       "usage": "instances_with_scores(probabilities[i] ([H, W, N] of one image), "
                                "per_class=per_class, **options) -> (instances [H, W], scores [K], class_of [K+1])"}
        if predictor.apply_with_distance is not None:  # the exported function returns the class probabilities only
            postprocess["note"] = ("these options read the model's predicted distance map, which this export does "
                                   "not return: predict instances with `launch.py --mode=predict`")
    return {
        "format": FORMAT,
        "task": predictor.task_name,
        "model": model,
        "class_names": list(predictor.class_names),
        "input": {"dtype": "uint8", "shape": shape, "layout": "NHWC, RGB, 0..255",
                  "multiple": predictor.align,
                  "note": "a named dimension takes any size, a number only that one; the model pads H and W to a "
                          "multiple of `multiple` pixels inside and crops its outputs back, so tiles whose sides "
                          "are multiples of it meet the pooling grid of the whole image"},
        "normalization": {"mean": list(predictor.mean), "std": list(predictor.std),
                          "applied": "inside the exported function: (image - mean) / std, in 0..255 units"},
        "outputs": outputs,
        "postprocess": postprocess,
        "source": source,
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        "files": {"model": MODEL_FILE},
    }


def _source(workdir: pathlib.Path, *, which: str, step: int) -> dict[str, Any]:
    results = workdir / "results.json"
    trained = json.loads(results.read_text()) if results.exists() else {}
    return {"workdir": str(workdir.resolve()), "checkpoint": which, "step": step,
            "trained_commit": trained.get("commit"),  # the code that trained the run (its results.json)
            "results_step": trained.get("step"), "export_commit": wd.code_version()}


def _check_clashes(out_dir: pathlib.Path, *, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; --output must be a folder")
    for name in (MODEL_FILE, METADATA_FILE):
        if (out_dir / name).exists() and not overwrite:
            raise ExportError(f"{out_dir / name} exists; pass --overwrite (overwrite=True) to replace the export "
                              f"in {out_dir}, or choose another --output")


def _write(path: pathlib.Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)  # a reader never sees half a file


def export_run(workdir: str | pathlib.Path, out_dir: str | pathlib.Path | None, *,
               config: ml_collections.ConfigDict | None = None, which: str = "latest",
               image_size: tuple[int, int] | None = None, batch: int | None = None, overwrite: bool = False,
               platforms: Sequence[str] | None = None) -> pathlib.Path:
    """Exports the latest (or best) checkpoint of `workdir` into `out_dir`: `model.jaxexport` (the serialised
    function, see `predict_function`) and `export.json` (`metadata`). Returns `out_dir`; `load_exported(out_dir)`
    calls it.

    config: as `seg_jax.predict.load_predictor` takes it (None: the run's own `config.json`).
    image_size: (height, width) pixels to export at a fixed size; None for any size where the model allows (see
        the module docstring). batch: a fixed batch size; None for any.
    platforms: see `export_predictor`.

    Raises:
        ExportError: no `out_dir`, bad sizes, or an export already in `out_dir` (without `overwrite`); checked
            before anything is restored or written.
        The errors of `load_predictor` (no run, no checkpoint, a bad config).
    """
    if not out_dir:
        raise ExportError("no output folder: pass --output=DIR (out_dir), where model.jaxexport and export.json "
                          "are written")
    workdir, out_dir = pathlib.Path(workdir), pathlib.Path(out_dir)
    _check_sizes(batch=batch, image_size=image_size)
    _check_clashes(out_dir, overwrite=overwrite)
    predictor = load_predictor(config, workdir, which=which)
    exported = export_predictor(predictor, image_size=image_size, batch=batch, platforms=platforms)
    model = (config or wd.read_config(workdir)).model.name
    info = metadata(predictor, exported, model=model, source=_source(workdir, which=which, step=predictor.step))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / MODEL_FILE, bytes(exported.serialize()))
    _write(out_dir / METADATA_FILE, (json.dumps(info, indent=2) + "\n").encode())
    logging.info("exported %s (step %d, input %s) to %s", workdir, predictor.step, info["input"]["shape"], out_dir)
    return out_dir
