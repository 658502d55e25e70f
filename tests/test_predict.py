"""`--mode=predict` (issue 12 section 2): tiles and their blending, tiled against whole-image outputs, instances
stitched across tile borders, Mask R-CNN tiles merged, and the command on a tiny trained run."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage, special

from seg_jax import data, postprocess, predict, visualize
from seg_jax.data.pipeline import augment
from seg_jax.predict import config as predict_config, detections as dets, predictor as predictor_lib, tiling
from seg_jax.train import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEAN, STD = data.base_config().mean, data.base_config().std


def _options(**changes):
    options = predict_config.base_config()
    options.update(changes)
    return options


def _disks(shape, centres, radius):
    """bool [K, H, W] disks and the uint8 [H, W, 3] image with them bright on a dark background."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    masks = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2 for cy, cx in centres])
    image = np.where(masks.any(0)[..., None], 220, 30).astype(np.uint8).repeat(3, -1)
    return masks, image


# Disks placed across tile borders of 48-px tiles with 16-px overlaps on a 100 x 130 image.
CENTRES = [(20, 20), (24, 47), (40, 90), (47, 60), (70, 30), (78, 110), (90, 70), (60, 118)]


def _local_logits(tiles):
    """A stand-in semantic model with a 5x5 receptive field (zero-padded like a network's 'same' convolutions)."""
    brightness = ndimage.uniform_filter(np.asarray(tiles).mean(-1), size=(1, 5, 5), mode="constant")
    return np.stack([-4 * brightness, 4 * brightness], axis=-1)


def test_blend_weights_by_hand():
    linear = tiling.blend_weights(6, blend="linear", overlap=2, gaussian_sigma=0.125)
    profile = np.array([0.25, 0.75, 1, 1, 0.75, 0.25])
    np.testing.assert_allclose(linear, np.outer(profile, profile), rtol=1e-6)
    gaussian = tiling.blend_weights(4, blend="gaussian", overlap=0, gaussian_sigma=0.25)  # sigma 1 px, centre 1.5
    profile = np.exp(-np.array([1.5, 0.5, 0.5, 1.5]) ** 2 / 2)
    np.testing.assert_allclose(gaussian, np.outer(profile, profile), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown blend 'cosine'"):
        tiling.blend_weights(4, blend="cosine", overlap=0, gaussian_sigma=0.25)


def test_tile_starts_cover_the_axis_on_the_models_grid_with_the_overlap():
    assert tiling.axis_starts(40, tile_size=48, overlap=16).tolist() == [0]
    assert tiling.axis_starts(100, tile_size=48, overlap=16).tolist() == [0, 26, 52]
    for length, tile, overlap, align in [(104, 48, 16, 8), (1000, 64, 24, 16), (96, 32, 0, 32), (130, 48, 16, 4)]:
        length = -(-length // align) * align
        starts = tiling.axis_starts(length, tile_size=tile, overlap=overlap, align=align)
        assert starts[0] == 0 and starts[-1] == length - tile and np.all(starts % align == 0)
        assert np.all(np.diff(starts) <= tile - overlap) and np.all(np.diff(starts) > 0)
    assert tiling.padded_size(30, 70, tile_size=48, align=16) == (48, 80)


def test_blending_a_pixelwise_model_gives_its_output_exactly():
    """Every tile gives each pixel the same logits, so any weighting must give them back; the reference normalises
    with its own arithmetic."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 101, 3), dtype=np.uint8)
    mix = rng.normal(size=(3, 5)).astype(np.float32)
    expected = ((image - np.float32(MEAN)) / np.float32(STD)) @ mix
    for blend in predict_config.BLENDS:
        weights = tiling.blend_weights(32, blend=blend, overlap=8, gaussian_sigma=0.125)
        got = tiling.blended_logits(image, lambda tiles: tiles @ mix, tile_size=32, overlap=8, align=4,
                                    weights=weights, batch_size=3, mean=MEAN, std=STD)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _fake_predictor(predict_tiles, *, task_name="semantic", instance_options=None, **options):
    return predict.Predictor(task_name=task_name, apply=lambda _, tiles: predict_tiles(tiles), variables={}, align=1,
                             options=_options(**options),
                             class_names=("background", "object"), mean=MEAN, std=STD,
                             instance_options=instance_options, step=0)


def _matched_ious(found, truth):
    """Best IoU of each true bool mask [H, W] among the instances of int [H, W] `found`."""
    ious = []
    for mask in truth:
        ids = np.unique(found[mask])
        ids = ids[ids > 0]
        ious.append(max((np.sum(mask & (found == k)) / np.sum(mask | (found == k)) for k in ids), default=0.0))
    return np.array(ious)


@pytest.mark.parametrize("method", ["connected_components", "watershed"])
def test_instances_of_the_stitched_probabilities_equal_the_whole_images(method):
    truth, image = _disks((100, 130), CENTRES, radius=6)
    options = {"method": method, "foreground_threshold": 0.5, "min_size": 4}
    tiled = predict.predict_image(image, _fake_predictor(_local_logits, instance_options=(False, options),
                                                         tile_size=48, overlap=16))
    assert tiled.tiles == 12  # 3 x 4
    whole = special.softmax(_local_logits(augment.normalize(image, mean=MEAN, std=STD)[None])[0], axis=-1)
    reference, _, _ = postprocess.instances_with_scores(whole, **options)
    assert tiled.instances.max() == reference.max() == len(CENTRES)
    assert np.all(_matched_ious(tiled.instances, [reference == k for k in range(1, len(CENTRES) + 1)]) >= 0.99)
    # one instance per disk, cut by a tile border or not (the 5x5 blur moves the outlines a little)
    assert np.all(_matched_ious(tiled.instances, truth) >= 0.95)
    assert tiled.scores.shape == (len(CENTRES),) and np.all(tiled.classes == 1)


def _fake_detector(tiles, *, max_detections=6):
    """A stand-in Mask R-CNN: each bright connected component of a tile is one detection; objects cut by the tile's
    border score higher than whole ones, so only the merge's preference for whole ones can pick the right copy."""
    b, h, w = tiles.shape[:3]
    out = {"boxes": np.zeros((b, max_detections, 4), np.float32), "scores": np.zeros((b, max_detections), np.float32),
           "classes": np.zeros((b, max_detections), np.int32), "valid": np.zeros((b, max_detections), bool),
           "masks": np.zeros((b, max_detections, h, w), np.float32)}
    for i, tile in enumerate(np.asarray(tiles)):
        components, _ = ndimage.label(tile.mean(-1) > 0)
        for k, (rows, cols) in enumerate(ndimage.find_objects(components)[:max_detections]):
            cut = rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w
            out["boxes"][i, k] = (cols.start, rows.start, cols.stop, rows.stop)
            out["scores"][i, k] = 0.95 if cut else 0.9
            out["classes"][i, k], out["valid"][i, k] = 1, True
            out["masks"][i, k] = components == k + 1
    return out


def test_mask_rcnn_tiles_merge_into_one_detection_per_object():
    truth, image = _disks((100, 130), CENTRES, radius=6)
    found = predict.predict_image(image, _fake_predictor(_fake_detector, task_name="detection", tile_size=48,
                                                         overlap=16))
    assert found.instances.max() == len(CENTRES) and np.all(found.scores == np.float32(0.9))
    assert np.all(_matched_ious(found.instances, truth) >= 0.99)
    np.testing.assert_array_equal(found.labels, (found.instances > 0).astype(np.int32))
    for box, mask in zip(found.boxes, [found.instances == k for k in range(1, len(CENTRES) + 1)]):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        np.testing.assert_allclose(box, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])


def test_merge_keeps_the_higher_score_of_duplicates_from_different_tiles_only():
    square = np.ones((4, 4), bool)
    make = lambda score, tile, left=0: dets.Detection(box=np.array([left, 0, left + 4, 4.0]), score=score, label=1,
                                                     top=0, left=left, mask=square, cut=False, tile=tile)
    kept = dets.merge([make(0.6, 0), make(0.8, 1), make(0.7, 1, left=1)], min_overlap=0.5)
    # the 0.6 copy (tile 0) overlaps the 0.8 one (tile 1); the 0.7 one shares tile 1 with it, so it stays
    assert [d.score for d in kept] == [0.8, 0.7]


def test_predict_options_are_checked_by_name():
    with pytest.raises(validate.ConfigError, match="not a multiple of 16") as e:
        predictor_lib.check_options(_options(tile_size=40), multiple=16, model="unet")
    assert e.value.field == "predict.tile_size"
    for field, value in [("overlap", 40), ("blend", "box"), ("batch_size", 0), ("overlay_alpha", 2)]:
        with pytest.raises(validate.ConfigError) as e:
            predictor_lib.check_options(_options(**{"tile_size": 48, "overlap": 16, field: value}), multiple=16,
                                        model="unet")
        assert e.value.field == f"predict.{field}"
    options = _options()
    options.tile_sise = 3
    with pytest.raises(validate.ConfigError, match="unknown predict option") as e:
        predictor_lib.check_options(options, multiple=16, model="unet")


# --------------------------------------------------------------------------------------------- on a trained run
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    from experiments import default
    from seg_jax import train
    config = default.get_config("tiny")
    config.data.data_dir = data_dir
    workdir = tmp_path_factory.mktemp("predict") / "run"
    train.train_and_evaluate(config, workdir)
    examples = data.resolve(config.data).source("train")
    return workdir, [examples[i]["image"] for i in range(15)]


def _mosaic(images, rows, cols):
    return np.concatenate([np.concatenate(images[r * cols:(r + 1) * cols], 1) for r in range(rows)], 0)


def test_tiled_prediction_of_the_trained_model_equals_the_whole_images(trained):
    workdir, images = trained
    image = _mosaic(images, 3, 5)[:94, :150]  # shapes scenes; sides not multiples of the model's 4
    config = predictor_lib.run_config(None, workdir)
    config.predict.update(tile_size=64, overlap=32)
    predictor = predict.load_predictor(config, workdir)
    tiled = predict.predict_image(image, predictor, with_probabilities=True)
    whole = np.asarray(predictor.predict_tiles(augment.normalize(image, mean=MEAN, std=STD)[None]))[0]
    assert tiled.tiles == 8 and predictor.align == 4  # 2 x 4 tiles over 96 x 152 padded pixels
    logits = np.log(tiled.probabilities)  # softmax of the blended logits: equal up to a constant per pixel
    difference = np.abs((logits - logits.mean(-1, keepdims=True)) - (whole - whole.mean(-1, keepdims=True)))
    assert difference.max() < 0.1 and np.percentile(difference, 99) < 0.02, (difference.max(), difference.mean())
    differ = tiled.labels != whole.argmax(-1)
    assert differ.mean() <= 0.005
    top2 = np.sort(whole, -1)
    assert np.all((top2[..., -1] - top2[..., -2])[differ] <= 2 * difference.max(-1)[differ])  # near-ties only


def test_command_writes_every_output_skips_a_corrupt_file_and_refuses_to_overwrite(trained, tmp_path):
    workdir, images = trained
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    big = _mosaic(images, 2, 3)[:60, :90]
    Image.fromarray(big).save(inputs / "scene.png")
    Image.fromarray(images[0]).save(inputs / "small.jpg", quality=95)
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--mode=predict", f"--workdir={workdir}",
                           f"--input={inputs}", f"--output={output}", "--config.predict.tile_size=32",
                           "--config.predict.overlap=8", "--config.predict.save_probabilities=True"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # one image failed, the others were written
    assert "broken.png" in done.stderr and "ETA" in done.stderr
    assert sorted(p.name for p in output.iterdir()) == sorted(
        f"{stem}_{kind}" for stem in ("scene", "small") for kind in ("labels.png", "overlay.png", "probabilities.npz"))

    names = data.class_names(predictor_lib.run_config(None, workdir).data)
    labels = Image.open(output / "scene_labels.png")
    assert labels.mode == "P" and labels.size == (90, 60) and json.loads(labels.info["class_names"]) == list(names)
    palette = np.asarray(labels.getpalette()[:3 * len(names)], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, visualize.palette(len(names)))
    saved = np.load(output / "scene_probabilities.npz")
    probabilities = saved["probabilities"]
    assert probabilities.shape == (60, 90, len(names)) and list(saved["class_names"]) == list(names)
    np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels), probabilities.argmax(-1))
    overlay = np.asarray(Image.open(output / "scene_overlay.png"))
    background = np.asarray(labels) == 0
    np.testing.assert_array_equal(overlay[background], big[background])
    colours = visualize.palette(len(names))[np.asarray(labels)].astype(float)
    # label2rgb's HSV round trip of the image may round an exact x.5 either way
    np.testing.assert_allclose(overlay[~background], np.rint(0.5 * big[~background] + 0.5 * colours[~background]),
                               atol=1)

    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    config = predictor_lib.run_config(None, workdir)
    config.predict.update(tile_size=32, overlap=8, save_probabilities=True)
    with pytest.raises(predict.PredictError, match=r"scene_labels.png exists; pass --overwrite"):
        predict.predict_folder(config, workdir, inputs=str(inputs / "s*"), output=output)
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} == before


def test_instance_config_writes_16_bit_instances_and_coco_json(trained, tmp_path):
    """Per-class instances of the shapes classes, from an `evals` entry added to the run's config (evaluation
    settings may change): the JSON's masks are the PNG's instances."""
    workdir, images = trained
    Image.fromarray(_mosaic(images, 2, 2)).save(tmp_path / "scene.png")
    config = predictor_lib.run_config(None, workdir)
    config.evals.shapes = {"type": "instances", "per_class": True, "options": {"min_size": 4}}
    config.predict.update(tile_size=32, overlap=8)
    report = predict.predict_folder(config, workdir, inputs=str(tmp_path / "scene.png"), output=tmp_path / "out")
    assert not report.failed
    instances = np.asarray(Image.open(tmp_path / "out" / "scene_instances.png"))
    assert instances.dtype == np.uint16 and instances.shape == (64, 64)
    coco = json.loads((tmp_path / "out" / "instances.json").read_text())
    names = data.class_names(config.data)
    assert coco["categories"] == [{"id": c, "name": n} for c, n in enumerate(names)][1:]
    assert coco["images"] == [{"id": 1, "file_name": "scene.png", "height": 64, "width": 64}]
    assert len(coco["annotations"]) == instances.max() > 0
    labels = np.asarray(Image.open(tmp_path / "out" / "scene_labels.png"))
    for k, annotation in enumerate(coco["annotations"], start=1):
        np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), instances == k)
        assert 0 <= annotation["score"] <= 1 and annotation["area"] == np.sum(instances == k)
        assert np.all(labels[instances == k] == annotation["category_id"])  # per-class instances: one class each


def test_every_shipped_config_has_a_valid_predict_section():
    import importlib
    from seg_jax.train.experiment import build_experiment
    for path in sorted((ROOT / "experiments").glob("*.py")):
        module = importlib.import_module(f"experiments.{path.stem}")
        for arg in getattr(module, "ARGS", ()):
            config = module.get_config(arg)
            exp = build_experiment(config, num_classes=len(data.class_names(config.data)))
            predictor_lib.check_options(config.predict, multiple=exp.init_model.input_multiple,
                                        model=config.model.name)
