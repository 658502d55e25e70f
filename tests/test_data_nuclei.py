"""The `nuclei` dataset's versions: 1.0.0 reproduced bit for bit, 2.0.0's generator (each property it is built to
have, switched by its parameter), the held-out `shifted` split, `data.version`, and a zero-shot evaluation on it."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage, stats

from seg_jax import data
from seg_jax.data.derived import instance_statistics
from seg_jax.data.sources import nuclei, nuclei_v2

# sha256 (first 16 hex digits) of render_nuclei's (image, label, instances) for rng [seed, split, number] at a size,
# computed with the code of main before version 2.0.0 was added (commit 0f9377d).
VERSION_1_DIGESTS = {(1, 0, 0, 32): "cc1e2ebd73f960f2", (1, 1, 3, 32): "91f9c5362fcced79",
                     (1, 2, 7, 32): "6432115143bc7355", (0, 0, 0, 96): "610d9de23697d1da",
                     (0, 1, 5, 96): "7557cb630d65bf10"}


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str((a.dtype, a.shape)).encode())
    return h.hexdigest()[:16]


def tiny_config(data_dir, version=None, **fields):
    cfg = data.base_config("nuclei")
    cfg.update(data_dir=str(data_dir), variant="tiny", version=version, **fields)
    return cfg


@pytest.fixture(scope="module")
def simulated():
    """40 default version-2 images of 96 x 96 pixels."""
    return [nuclei_v2.simulate(np.random.default_rng([5, k]), 96) for k in range(40)]


def simulate_many(params, count=20, seed=6):
    return [nuclei_v2.simulate(np.random.default_rng([seed, k]), 96, params=params) for k in range(count)]


# ---------------------------------------------------------------- versions and the builder


def test_version_1_renders_exactly_what_it_rendered_before_version_2(data_dir):
    for (seed, split, number, size), expected in VERSION_1_DIGESTS.items():
        assert digest(nuclei.render_nuclei(np.random.default_rng([seed, split, number]), size)) == expected
    # ... and the default version (data.version None) stores them: the tiny variant's seed is 1.
    ds = data.resolve(tiny_config(data_dir))
    assert ds.version == "1.0.0" and ds.directory.endswith("seg_jax_nuclei/tiny/1.0.0")
    assert ds.split_sizes == {"train": 24, "validation": 8, "test": 8}
    for split, number in (("train", 0), ("validation", 3), ("test", 7)):
        stored = next(ex for ex in (ds.source(split)[i] for i in range(len(ds.source(split))))
                      if ex["id"] == f"{split}_{number:05d}")
        arrays = (stored["image"], stored["label"].astype(np.uint8), stored["instances"].astype(np.uint16))
        assert digest(arrays) == VERSION_1_DIGESTS[(1, ("train", "validation", "test").index(split), number, 32)]


def test_version_2_builder_writes_its_own_files_and_the_shifted_split(data_dir):
    ds = data.resolve(tiny_config(data_dir, version="2.0.0"))
    assert ds.version == "2.0.0" and ds.directory.endswith("seg_jax_nuclei/tiny/2.0.0")
    assert ds.split_sizes == {"train": 24, "validation": 8, "test": 8, "shifted": 8}
    by_id = {ex["id"]: ex for split in ("validation", "shifted") for ex in
             (ds.source(split)[i] for i in range(8))}
    # Example k of split i comes from rng (variant seed 1, i, k); `shifted` is stream 3 with the SHIFTED parameters.
    for key, render, stream in (("validation_00003", nuclei_v2.render_default, 1),
                                ("shifted_00002", nuclei_v2.render_shifted, 3)):
        image, label, instances = render(np.random.default_rng([1, stream, int(key[-5:])]), 32)
        np.testing.assert_array_equal(by_id[key]["image"], image)
        np.testing.assert_array_equal(by_id[key]["label"], label)
        np.testing.assert_array_equal(by_id[key]["instances"], instances)
    # Targets derived from version 2 live beside those of version 1, under the base's version.
    border = data.resolve(tiny_config(data_dir, version="2.0.0", targets="border"))
    assert border.directory.endswith("seg_jax_nuclei_targets/tiny_border2/2.0.0") and "shifted" in border.split_sizes
    version_1 = data.resolve(tiny_config(data_dir, targets="border"))
    assert version_1.directory.endswith("tiny_border2/1.0.0")
    with pytest.raises(KeyError, match=r"'shifted' not in dataset 'nuclei'; available splits: test, train, "
                                       r"validation \(version 1.0.0; .* set data.version=2.0.0\)"):
        version_1.source("shifted")


def test_a_version_the_builder_lacks_is_one_clear_config_error(tmp_path):
    from seg_jax.train import validate
    config = type("C", (), {})()  # resolve_dataset reads config.data only
    config.data = tiny_config(tmp_path / "nowhere", version="3.0.0")
    with pytest.raises(validate.ConfigError, match=r"^data.version: unknown data.version '3.0.0' for dataset "
                                                   r"'nuclei'; valid versions: 1.0.0 \(the default\), 2.0.0$"):
        validate.resolve_dataset(config)
    shapes = data.base_config("shapes")
    shapes.update(data_dir=str(tmp_path / "nowhere"), version="2.0.0")
    with pytest.raises(KeyError, match=r"valid versions: 1.1.0 \(the default\)\W*$"):
        data.resolve(shapes)
    folder = data.base_config("folder")
    folder.version = "1.0.0"
    with pytest.raises(KeyError, match="procedural datasets only; dataset 'folder'"):
        data.class_names(folder)
    assert not (tmp_path / "nowhere").exists()


def test_version_2_is_a_pure_function_of_the_seed():
    first, again, other = (nuclei_v2.simulate(np.random.default_rng(seed), 64) for seed in ([2, 0, 9], [2, 0, 9],
                                                                                           [2, 0, 10]))
    for name in ("image", "label", "instances", "mitotic", "clean"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.image, other.image)
    assert first.image.dtype == np.uint8 and first.image.shape == (64, 64, 3)
    np.testing.assert_array_equal(first.image[..., 0], first.image[..., 2])  # grey replicated
    np.testing.assert_array_equal(first.label, first.instances > 0)
    assert first.instances.max() == len(np.unique(first.instances)) - 1 == len(first.mitotic)  # numbered 1..K


# ---------------------------------------------------------------- version 2's properties


def test_clusters_share_boundaries_so_components_and_thresholds_merge_them(simulated):
    from skimage.filters import threshold_otsu
    summary = instance_statistics.dataset_statistics(
        [{"image": s.image, "label": s.label, "instances": s.instances} for s in simulated])
    assert summary.touching_fraction > 0.6
    components = sum(ndimage.label(s.label)[1] for s in simulated)
    thresholded = sum(_components(s.image[..., 0] > threshold_otsu(s.image[..., 0]), min_size=8) for s in simulated)
    assert components < 0.6 * summary.counts.sum() and thresholded < 0.6 * summary.counts.sum()
    apart = dataclasses.replace(nuclei_v2.DEFAULT, touch_probability=0.0, min_gap=1.3, density=6.0)
    isolated = [instance_statistics.image_statistics(image=s.image, label=s.label, instances=s.instances)
                for s in simulate_many(apart)]
    assert instance_statistics.InstanceStatistics.concatenate(isolated).touching_fraction < 0.1


def _components(mask: np.ndarray, *, min_size: int) -> int:
    """Connected components of `mask` bool [H, W] with at least `min_size` pixels (noise specks left out)."""
    labelled, count = ndimage.label(mask)
    return int((np.bincount(labelled.ravel(), minlength=count + 1)[1:] >= min_size).sum())


def test_sizes_spread_log_normally_and_scale_with_magnification(simulated):
    areas = [np.bincount(s.instances.ravel())[1:] for s in simulated]
    pooled = np.concatenate(areas)
    assert np.percentile(pooled, 90) > 4 * np.percentile(pooled, 10)
    rho = stats.spearmanr([s.magnification for s in simulated], [np.median(a) for a in areas]).statistic
    assert rho > 0.7
    fixed = dataclasses.replace(nuclei_v2.DEFAULT, magnification=(1.0, 1.0), radius_log_sigma=0.0,
                                mitotic_fraction=0.0, min_gap=1.3, touch_probability=0.0, density=6.0)
    inner = [np.bincount(s.instances.ravel())[1:][_away_from_border(s.instances)] for s in simulate_many(fixed)]
    inner = np.concatenate(inner)
    assert inner.std() / inner.mean() < 0.15  # the spread comes from radius_log_sigma and magnification


def _away_from_border(instances: np.ndarray) -> np.ndarray:
    """bool [K]: instances 1..K that do not touch the image border."""
    edge = np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]]))
    return ~np.isin(np.arange(1, instances.max() + 1), edge)


def test_shapes_are_elongated_and_irregular(simulated):
    aspects = []
    for s in simulated:
        isolated = set(range(1, s.instances.max() + 1)) - set(instance_statistics.touching_instances(s.instances))
        for i in sorted(isolated & set(np.flatnonzero(_away_from_border(s.instances)) + 1)):
            yy, xx = np.nonzero(s.instances == i)
            if len(yy) >= 20:
                low, high = np.linalg.eigvalsh(np.cov(np.stack([yy, xx])))
                aspects.append(np.sqrt(high / low))
    assert len(aspects) > 30 and np.median(aspects) > 1.15 and max(aspects) > 1.6


def test_noise_is_poisson_gaussian_with_the_drawn_gain_and_read_noise(simulated):
    for s in simulated[:3]:
        grey = s.image[..., 0].astype(np.float64)
        usable = (s.clean > 3) & (s.clean < 200)  # away from clipping at 0 and 255
        edges = np.quantile(s.clean[usable], np.linspace(0, 1, 9))
        bins = np.digitize(s.clean[usable], edges[1:-1])
        means = [s.clean[usable][bins == b].mean() for b in range(8)]
        variances = [(grey - s.clean)[usable][bins == b].var() for b in range(8)]
        slope, intercept = np.polyfit(means, variances, 1)
        assert slope == pytest.approx(s.gain, rel=0.15)  # Poisson: variance grows as gain x mean
        assert intercept == pytest.approx(s.read_noise**2 + 1 / 12, rel=0.35)  # read noise + rounding


def test_snr_is_in_range_and_lower_in_the_shifted_set(simulated):
    def snr(sims):
        return np.nanmedian([instance_statistics.image_statistics(image=s.image, label=s.label,
                                                                  instances=s.instances).snr[0] for s in sims])
    default, shifted = snr(simulated), snr(simulate_many(nuclei_v2.SHIFTED))
    assert 12 < default < 50 and 4 < shifted < 0.6 * default


def test_mitotic_nuclei_are_smaller_and_brighter(simulated):
    mitotic, other = [], []
    for s in simulated:
        ids = np.arange(1, s.instances.max() + 1)
        means = ndimage.mean(s.image[..., 0].astype(np.float64), s.instances, ids)
        areas = np.bincount(s.instances.ravel())[1:]
        mitotic += list(zip(means[s.mitotic], areas[s.mitotic]))
        other += list(zip(means[~s.mitotic], areas[~s.mitotic]))
    mitotic, other = np.array(mitotic), np.array(other)
    assert 0.02 < len(mitotic) / (len(mitotic) + len(other)) < 0.1
    assert np.median(mitotic[:, 0]) > 1.8 * np.median(other[:, 0])
    assert np.median(mitotic[:, 1]) < 0.7 * np.median(other[:, 1])


def test_brightness_has_a_dim_tail(simulated):
    def dim_share(sims):
        values = []
        for s in sims:
            grey = s.image[..., 0].astype(np.float64)
            values += list(ndimage.mean(grey, s.instances, np.arange(1, s.instances.max() + 1))
                           - np.median(grey[s.label == 0]))
        values = np.array(values)
        return np.mean(values < 0.4 * np.median(values))
    assert dim_share(simulated) > 0.05
    assert dim_share(simulate_many(dataclasses.replace(nuclei_v2.DEFAULT, dim_fraction=0.0), count=40)) < 0.03


def _core_variation(sims) -> float:
    """Median over in-focus nuclei of std / mean of the noise-free intensity 2 px inside their outline."""
    values = []
    for s in sims:
        for i in range(1, s.instances.max() + 1):
            core = ndimage.binary_erosion(s.instances == i, iterations=2)
            if core.sum() > 20 and not s.out_of_focus[i - 1]:
                values.append(s.clean[core].std() / s.clean[core].mean())
    return float(np.median(values))


def test_chromatin_texture_and_gradients_vary_intensity_within_nuclei():
    textured = _core_variation(simulate_many(nuclei_v2.DEFAULT))
    flat = _core_variation(simulate_many(dataclasses.replace(
        nuclei_v2.DEFAULT, texture_amplitude=0.0, spots_per_nucleus=0.0, gradient=0.0, edge_falloff=0.0)))
    assert textured > 0.08 and flat < 0.03


def test_out_of_focus_nuclei_have_softer_edges(simulated):
    sharpness = {True: [], False: []}
    for s in simulated:
        slope = ndimage.gaussian_gradient_magnitude(s.clean, 0.5)
        for i in range(1, s.instances.max() + 1):
            mask = s.instances == i
            rim = mask & ~ndimage.binary_erosion(mask)
            if rim.sum() >= 10:
                sharpness[bool(s.out_of_focus[i - 1])].append(slope[rim].mean() / s.clean[mask].mean())
    assert len(sharpness[True]) > 20
    assert np.median(sharpness[True]) < 0.85 * np.median(sharpness[False])


def test_background_is_uneven_only_through_its_parameters():
    def variation(params):
        values = []
        for s in simulate_many(params, count=10, seed=7):
            far = ndimage.distance_transform_edt(s.label == 0) > 12
            if far.sum() > 200:
                values.append(s.clean[far].std() / s.clean[far].mean())
        return np.median(values)
    assert variation(nuclei_v2.DEFAULT) > 0.1
    even = dataclasses.replace(nuclei_v2.DEFAULT, vignetting=0.0, background_variation=0.0, haze=0.0)
    assert variation(even) < 1e-3


def test_the_shifted_set_has_bigger_nuclei_and_denser_clusters(simulated):
    def summary(sims):
        return instance_statistics.dataset_statistics(
            [{"image": s.image, "label": s.label, "instances": s.instances} for s in sims])
    default, shifted = summary(simulated), summary(simulate_many(nuclei_v2.SHIFTED, count=40))
    assert np.median(shifted.areas) > 1.5 * np.median(default.areas)
    assert shifted.touching_fraction > default.touching_fraction


# ---------------------------------------------------------------- zero-shot evaluation on the shifted split


def test_a_version_1_run_is_evaluated_zero_shot_on_the_shifted_split(make_config, tmp_path):
    from experiments import nuclei as nuclei_experiment
    from seg_jax import train
    from seg_jax.studies import spec
    config = make_config("nuclei", "border_watershed,tiny")
    for dotted, value in nuclei_experiment.OLD_RECIPE.items():
        spec.set_field(config, dotted, value, where="test")
    # An evaluator pinned to version 2.0.0 scores the version-1 run on the shifted split during training ...
    config.evals.shifted = {**config.evals.val_instances.to_dict(), "split": "shifted", "data_version": "2.0.0"}
    workdir = tmp_path / "v1"
    train.train_and_evaluate(config, workdir)
    trained = json.loads((workdir / "results.json").read_text())
    assert config.data.version == "1.0.0"
    shifted = config.copy_and_resolve_references()
    shifted.data.version = "2.0.0"  # not a model field: the classes are the same
    del shifted.evals.shifted
    scalars = train.evaluate(shifted, workdir, split="shifted")
    assert scalars["val/num_images"] == 8 and 0 <= scalars["val_instances/dsb"] <= 1
    # ... exactly as `--mode=eval --config.data.version=2.0.0 --split=shifted` scores it afterwards.
    during = {k.split("/", 1)[1]: v for k, v in trained["scalars"].items() if k.startswith("shifted/")}
    after = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("val_instances/")}
    assert during and during == pytest.approx(after)
    assert "version 2.0.0" in trained["definitions"]["shifted"]["data_version"]
    written = json.loads((workdir / "eval" / "latest_step4_shifted_data2.0.0.json").read_text())
    assert written["scalars"] == scalars and "data version 2.0.0" in written["checkpoint"]
    shifted.data.variant = "default"  # ... while the variant is
    with pytest.raises(train.ConfigMismatchError, match="data.variant"):
        train.evaluate(shifted, workdir, split="shifted")


# ---------------------------------------------------------------- the statistics figures


def test_statistics_script_writes_figures_and_the_table(data_dir, tmp_path, capsys):
    from PIL import Image
    from seg_jax.data import nuclei_stats
    assert nuclei_stats.main(["--out", str(tmp_path / "out"), "--data_dir", data_dir, "--variant", "tiny",
                              "--max_images", "6"]) == 0
    printed = capsys.readouterr().out.split()[-3:]  # after TFDS's lines about datasets it generates
    assert printed == [str(tmp_path / "out" / name) for name in ("statistics.png", "samples.png", "summary.md")]
    for name in ("statistics.png", "samples.png"):
        with Image.open(tmp_path / "out" / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 300
    rows = [line for line in (tmp_path / "out" / "summary.md").read_text().splitlines() if line.startswith("| v")]
    assert [row.split(" | ")[0] for row in rows] == ["| v1 (1.0.0) validation", "| v2 (2.0.0) validation",
                                                     "| v2 shifted (held out)"]
    # The table's numbers are those of the sets: e.g. the touching share of version 2's first 6 validation images.
    ds = data.resolve(tiny_config(data_dir, version="2.0.0"))
    expected = instance_statistics.dataset_statistics(ds.source("validation")[i] for i in range(6))
    cells = rows[1].split(" | ")
    assert cells[1] == "6" and cells[5] == f"{expected.touching_fraction:.2f}"
    assert cells[2] == f"{expected.counts.mean():.1f} ± {expected.counts.std():.1f}"


def test_an_evaluator_data_version_the_builder_lacks_names_the_entry(make_config, tmp_path):
    from seg_jax import train
    from seg_jax.train import validate
    config = make_config("nuclei", "ce_cc,tiny")
    config.evals.val_instances.data_version = "9.0.0"
    with pytest.raises(validate.ConfigError, match=r"^evals.val_instances.data_version: unknown data.version "
                                                   r"'9.0.0' for dataset 'nuclei'"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
