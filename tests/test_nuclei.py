"""The nuclei variants end to end on tiny data: the distance watershed trained, evaluated against its outputs
recomputed here, tuned and predicting; the Otsu baselines through the same evaluator; a user's folder of PNGs with
instances."""
import json

import jax
import numpy as np
import pytest
from PIL import Image

from seg_jax import data, metrics, postprocess, train, tune
from seg_jax.data.derived.targets import border_targets, instance_distance
from seg_jax.data.pipeline import augment
from seg_jax.train import loop, validate
from seg_jax.train.checkpoints import open_for_reading
from seg_jax.tune import target as tgt

INSTANCE_KEYS = ("dsb", "mask_AP", "mask_AP50", "mask_AP75", "PQ", "AJI")


@pytest.fixture(scope="module")
def distance_run(tmp_path_factory, data_dir):
    from experiments import nuclei
    config = nuclei.get_config("distance_watershed,tiny")
    config.data.data_dir = data_dir
    workdir = tmp_path_factory.mktemp("nuclei") / "distance"
    return config, workdir, train.train_and_evaluate(config, workdir)


def _outputs(config, workdir):
    """[(class probabilities [H, W, 2], distance [H, W], true instances)] of the validation images, from the raw
    network of the latest checkpoint (N + 1 output channels, the last the distance map), computed here."""
    ckpts = open_for_reading(workdir, config, which="latest", purpose="test")
    run = loop.build_run(config, training=False)
    state = ckpts.restore_readable(run.state)[0]
    ckpts.close()
    assert run.exp.task.distance and run.dataset.num_classes == 2
    source = run.dataset.source("validation")
    images = np.stack([augment.normalize(source[i]["image"], mean=config.data.mean, std=config.data.std)
                       for i in range(len(source))])
    raw = np.asarray(run.exp.init_model.apply(state.variables, images, train=False))
    assert raw.shape == (*images.shape[:3], 3)
    probabilities = np.asarray(jax.nn.softmax(raw[..., :2], -1))
    return [(probabilities[i], raw[i, ..., 2], source[i]["instances"]) for i in range(len(source))]


def _scores(outputs, options):
    reference = metrics.InstanceMetrics()
    for probabilities, distance, true in outputs:
        pred = postprocess.instances_from_semantic(probabilities, distance, **options)
        reference.add(pred, true, scores=postprocess.instance_scores(probabilities, pred))
    return reference.result()


@pytest.fixture(scope="module")
def distance_outputs(distance_run):
    config, workdir, _ = distance_run
    return _outputs(config, workdir)


def test_distance_watershed_trains_its_extra_channel_and_scores_its_own_outputs(distance_run, distance_outputs):
    config, workdir, record = distance_run
    for key in INSTANCE_KEYS:
        assert 0.0 <= record[f"val_instances/{key}"] <= 1.0, key
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    terms = [m["train/loss/distance"] for m in logged if "train/loss/distance" in m]
    assert terms and all(np.isfinite(terms)) and all(t > 0 for t in terms)
    # The evaluator's numbers equal the post-processing of the raw network's outputs, recomputed here.
    expected = _scores(distance_outputs, dict(config.evals.val_instances.options))
    assert record["val_instances/dsb"] == pytest.approx(expected["dsb"], abs=1e-6)
    assert record["val_instances/AJI"] == pytest.approx(expected["AJI"], abs=1e-6)
    assert record["val_instances/mask_AP"] == pytest.approx(expected["AP"], abs=1e-6)


def test_tune_searches_the_distance_markers_on_the_cached_distance_map(distance_run, distance_outputs, tmp_path):
    import shutil
    config, workdir, record = distance_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    options = tgt.options_of(config.evals.val_instances, kind="instances")
    space = tgt.default_space("instances", options)
    del options["per_class"]  # the evaluator's, not the post-processing's
    assert "predicted_distance" in space["markers"] and "peak_height" in space
    config = config.copy_and_resolve_references()
    config.tune.update(entry="val_instances", search="grid", space={
        "markers": ["predicted_distance", "distance_peaks"], "peak_height": [0.1, 0.0, 0.3]})
    result = tune.tune(config, copy)
    assert len(result.record["trials"]) == 6
    for trial in result.record["trials"]:  # each trial: the post-processing of the same outputs, with its options
        expected = _scores(distance_outputs, {**options, **trial["options"]})
        assert trial["score"] == pytest.approx(expected["dsb"], abs=1e-6), trial
    assert result.record["baseline"] == pytest.approx(record["val_instances/dsb"], abs=1e-6)


def test_eval_refuses_a_config_without_the_distance_channel(distance_run):
    from seg_jax.train import workdir as wd
    config, workdir, _ = distance_run
    plain = config.copy_and_resolve_references()
    plain.loss = {"cross_entropy": 1.0}
    with pytest.raises(wd.ConfigMismatchError, match=r"loss.distance.penalty: 'l1' → None"):
        train.evaluate(plain, workdir)


def test_predict_mode_splits_with_the_blended_distance_map(distance_run, distance_outputs):
    from seg_jax import predict
    config, workdir, _ = distance_run
    config = config.copy_and_resolve_references()
    config.predict.update(tile_size=32, overlap=0)  # one tile per 32 x 32 image: the outputs computed here
    predictor = predict.load_predictor(config, workdir)
    assert predictor.apply_with_distance is not None
    source = data.resolve(config.data).source("validation")
    options = dict(config.evals.val_instances.options)
    for i, (probabilities, distance, _) in enumerate(distance_outputs[:3]):
        got = predict.predict_image(source[i]["image"], predictor)
        np.testing.assert_allclose(got.probabilities, probabilities, atol=1e-5)
        np.testing.assert_array_equal(got.instances, postprocess.instances_from_semantic(probabilities, distance,
                                                                                          **options))


def test_otsu_variants_score_the_images_without_the_model(make_config, tmp_path):
    from skimage import filters, measure
    config = make_config("nuclei", "otsu_cc,tiny")
    record = train.train_and_evaluate(config, tmp_path / "otsu")
    source = data.resolve(config.data).source("validation")
    reference = metrics.InstanceMetrics()
    for i in range(len(source)):
        example = source[i]
        grey = example["image"].astype(np.float64).mean(-1)
        pred = measure.label(grey > filters.threshold_otsu(grey), connectivity=1)
        sizes = np.bincount(pred.ravel())
        pred = measure.label(np.where(sizes[pred] < 8, 0, pred) > 0, connectivity=1)  # min_size 8 (no touching)
        reference.add(pred, example["instances"])
    assert record["val_instances/dsb"] == pytest.approx(reference.result()["dsb"], abs=1e-9)
    assert json.loads((tmp_path / "otsu" / "results.json").read_text())["step"] == 1
    # The classical baselines threshold the eval-size image: with data.eval_size the config is refused up front.
    config.data.eval_size = (32, 32)
    with pytest.raises(validate.ConfigError, match=r"^evals.val_instances.source: 'otsu' thresholds the "
                                                   r"eval-size image"):
        train.train_and_evaluate(config, tmp_path / "sized")
    assert not (tmp_path / "sized").exists()


def _microscopy_folder(root, count=6, size=40):
    """images/, labels/ (0 background, 1 nucleus) and 16-bit instances/ PNGs of touching bright disks."""
    rng = np.random.default_rng(0)
    for name in ("images", "labels", "instances"):
        (root / name).mkdir()
    yy, xx = np.mgrid[:size, :size]
    for n in range(count):
        instances = np.zeros((size, size), np.uint16)
        y, x = rng.integers(10, size - 10, 2)
        for k, (dy, dx) in enumerate([(0, 0), (0, 9), (9, 4)]):  # three touching disks of radius 5
            instances[np.hypot(yy - y - dy + 4, xx - x - dx + 4) <= 5] = 1000 + 10 * n + k
        level = np.where(instances > 0, 180, 30) + rng.normal(0, 10, instances.shape)
        Image.fromarray(np.clip(level, 0, 255).astype(np.uint8)).save(root / "images" / f"tile{n}.png")
        Image.fromarray((instances > 0).astype(np.uint8)).save(root / "labels" / f"tile{n}.png")
        Image.fromarray(instances).save(root / "instances" / f"tile{n}.png")


def test_nuclei_variants_train_on_a_users_folder(make_config, tmp_path):
    _microscopy_folder(tmp_path)
    out = tmp_path / "tfds"
    from seg_jax.data import folder
    assert folder.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--instances",
                        str(tmp_path / "instances"), "--num_classes", "2", "--class_names", "background", "nucleus",
                        "--val_fraction", "0.34", "--out", str(out)]) == 0
    config = make_config("nuclei", "distance_watershed,folder,tiny")
    config.data.data_dir = str(out)
    assert (config.data.name, config.data.version, config.data.variant) == ("folder", None, "default")
    record = train.train_and_evaluate(config, tmp_path / "run")
    dataset = data.resolve(config.data)
    assert record["val_instances/num_images"] == dataset.split_sizes["validation"] == 2
    for key in INSTANCE_KEYS:
        assert 0.0 <= record[f"val_instances/{key}"] <= 1.0, key
    example = dataset.source("train")[0]
    assert example["instances"].max() >= 1000  # the 16-bit ids, kept
    np.testing.assert_array_equal(example["distance"], instance_distance(example["instances"]))
    # The other variants read the same conversion (border targets: three classes from the same ids).
    border = make_config("nuclei", "border_watershed,folder").data
    border.data_dir = str(out)
    stored = data.resolve(border).source("validation")[0]
    np.testing.assert_array_equal(stored["label"], border_targets(stored["instances"], width=2))
