"""`--mode=predict`: a trained run on a folder (or glob) of images, writing `outputs`' files for each.

Nothing that exists is overwritten without `overwrite=True`: every output path is planned and checked before the
first file is written. An image that cannot be read is reported by name and skipped; the others are still written.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import pathlib
import time

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from seg_jax import visualize
from seg_jax.data.sources.image_files import IMAGE_SUFFIXES, FolderDatasetError, read_image
from seg_jax.predict import outputs
from seg_jax.predict.predictor import Prediction, Predictor, load_predictor, predict_image


class PredictError(ValueError):
    """Inputs or outputs of `--mode=predict` that cannot be used; the message names the path."""


@dataclasses.dataclass(frozen=True)
class PredictReport:
    """What `predict_folder` did: files written, and `(input, reason)` of each image skipped."""

    written: list[pathlib.Path]
    failed: list[tuple[pathlib.Path, str]]


def input_files(pattern: str) -> list[pathlib.Path]:
    """The images named by `pattern`, sorted: a directory (its files with an image suffix, not recursive), one
    file, or a glob (every file it matches).

    Raises:
        PredictError: nothing matches.
    """
    path = pathlib.Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        what = f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}"
    elif path.is_file():
        files = [path]
        what = ""
    else:
        files = [pathlib.Path(p) for p in glob.glob(str(path)) if pathlib.Path(p).is_file()]
        what = f"no files match {pattern!r}"
    if not files:
        raise PredictError(what)
    return sorted(files)


def planned_outputs(files: list[pathlib.Path], output: pathlib.Path, *, probabilities: bool,
                    instances: bool) -> dict[pathlib.Path, list[pathlib.Path]]:
    """Output paths of each input file (`outputs.image_outputs`, by file stem).

    Raises:
        PredictError: two inputs with the same stem (their outputs would be the same files).
    """
    planned, stems = {}, {}
    for file in files:
        if file.stem in stems:
            raise PredictError(f"{stems[file.stem]} and {file} have the same stem {file.stem!r}; their outputs in "
                               f"{output} would be the same files")
        stems[file.stem] = file
        planned[file] = [output / name for name in outputs.image_outputs(file.stem, probabilities=probabilities,
                                                                         instances=instances)]
    return planned


def check_clashes(paths: list[pathlib.Path], *, overwrite: bool) -> None:
    """Raises `PredictError` naming the first of `paths` that exists, unless `overwrite`."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise PredictError(f"{path} exists; pass --overwrite to replace the outputs in {path.parent}, or "
                               "choose another --output")


def _write(image: np.ndarray, prediction: Prediction, paths: list[pathlib.Path], *,
           predictor: Predictor) -> None:
    names = predictor.class_names
    outputs.write_labels(paths[0], prediction.labels, class_names=names)
    picture = visualize.overlay(image, prediction.labels, num_classes=len(names),
                                alpha=float(predictor.options.overlay_alpha), boundaries=False)
    if prediction.boxes is not None:
        picture = visualize.draw_boxes(picture, prediction.boxes, prediction.classes, num_classes=len(names))
    Image.fromarray(picture).save(paths[1])
    rest = paths[2:]
    if predictor.options.save_probabilities and prediction.probabilities is not None:
        np.savez_compressed(rest[0], probabilities=prediction.probabilities, class_names=np.asarray(names))
        rest = rest[1:]
    if prediction.instances is not None:
        outputs.write_instances(rest[0], prediction.instances)


def _categories(predictor: Predictor) -> list[tuple[int, str]]:
    names = predictor.class_names
    if predictor.task_name == "detection" or predictor.instance_options[0]:  # instances of every object class
        return list(enumerate(names))[1:]
    return [(1, names[1] if len(names) == 2 else "object")]  # one foreground


def _eta(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(max(seconds, 0)))


def predict_folder(config: ml_collections.ConfigDict | None, workdir: str | pathlib.Path, *, inputs: str,
                   output: str | pathlib.Path, overwrite: bool = False, which: str = "latest",
                   use_tuned: bool = True) -> PredictReport:
    """Predicts every image of `inputs` (`input_files`) with the latest (or best) checkpoint of `workdir` and writes
    the outputs (module `outputs`) into `output`; `config` None uses the run's own `config.json`; `use_tuned` as
    `load_predictor` takes it (tuned instance post-processing).

    Raises:
        PredictError: no inputs, two inputs with one stem, or an output that exists (without `overwrite`); nothing
            is written then.
        as `load_predictor` (run, checkpoint, config).
    """
    if not inputs or not output:
        raise PredictError(f"predict needs {'inputs (--input)' if not inputs else 'an output folder (--output)'}")
    output = pathlib.Path(output)
    files = input_files(inputs)
    predictor = load_predictor(config, workdir, which=which, use_tuned=use_tuned)
    probabilities = bool(predictor.options.save_probabilities) and predictor.task_name == "semantic"
    planned = planned_outputs(files, output, probabilities=probabilities, instances=predictor.has_instances)
    coco_path = output / outputs.INSTANCES_JSON
    check_clashes([p for paths in planned.values() for p in paths] + ([coco_path] if predictor.has_instances else []),
                  overwrite=overwrite)
    output.mkdir(parents=True, exist_ok=True)
    logging.info("predicting %d image(s) with %s step %d into %s", len(files), which, predictor.step, output)
    written, failed, images, annotations = [], [], [], []
    start = time.monotonic()
    for n, (file, paths) in enumerate(planned.items(), start=1):
        try:
            image = read_image(str(file), intensity=predictor.intensity)  # as the training images were read
        except FolderDatasetError as e:
            logging.error("skipped %s: %s", file, e)
            failed.append((file, str(e)))
            continue
        prediction = predict_image(image, predictor, with_probabilities=probabilities)
        _write(image, prediction, paths, predictor=predictor)
        written += paths
        if prediction.instances is not None:
            images.append({"id": n, "file_name": file.name, "height": image.shape[0], "width": image.shape[1]})
            annotations += outputs.coco_annotations(prediction.instances, scores=prediction.scores,
                                                    classes=prediction.classes, image_id=n)
        elapsed = time.monotonic() - start
        logging.info("predict %d/%d %s: %dx%d px, %d tile(s), %.1f s elapsed, ETA %s", n, len(files), file.name,
                     image.shape[0], image.shape[1], prediction.tiles, elapsed,
                     _eta(elapsed / n * (len(files) - n)))
    if predictor.has_instances:
        coco_path.write_text(json.dumps(outputs.coco_document(images, annotations,
                                                              categories=_categories(predictor))))
        written.append(coco_path)
    if failed:
        logging.error("%d of %d image(s) could not be read: %s", len(failed), len(files),
                      ", ".join(str(f) for f, _ in failed))
    return PredictReport(written=written, failed=failed)
