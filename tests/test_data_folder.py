"""Data stage, the folder converter's reliability: a conversion records its arguments and sources and refuses
(or, with --overwrite, replaces) a different one; data configs that disagree with it are refused at
`data.resolve`; no validation split at val_fraction 0 or one image; alpha dropped with one warning; no TFDS
download chatter or progress bars, errors on their own line (issue 10, items 7-10 and 15)."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seg_jax import data
from seg_jax.data import folder
from seg_jax.data.sources import folder_importer, tfds_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGGER = folder_importer.__name__


def write_folder(root, count: int = 4, *, rgba: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """`count` 8x10 scenes in root/images (RGBA for the numbers in `rgba`), root/labels (classes 0..2, some
    ignore), root/instances; returns the RGB pixels by stem."""
    rng = np.random.default_rng(0)
    for directory in ("images", "labels", "instances"):
        os.makedirs(root / directory, exist_ok=True)
    pixels = {}
    for number in range(count):
        stem = f"img{number}"
        image = rng.integers(0, 256, (8, 10, 4 if number in rgba else 3), dtype=np.uint8)
        label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (8, 10))
        instances = np.where(np.isin(label, [1, 2]), 7 + number, 0).astype(np.uint16)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(label).save(root / "labels" / f"{stem}.png")
        Image.fromarray(instances).save(root / "instances" / f"{stem}.png")
        pixels[stem] = image[..., :3]
    return pixels


def convert(root, **options) -> folder_importer.Conversion:
    options = {"num_classes": 3, "out": str(root / "tfds"), **options}
    return folder_importer.convert_folder(images=str(root / "images"), labels=str(root / "labels"), **options)


def folder_config(root, **folder_options):
    cfg = data.base_config("folder")
    cfg.data_dir = str(root / "tfds")
    cfg.folder.update({"images": str(root / "images"), "labels": str(root / "labels"), "num_classes": 3,
                       **folder_options})
    return cfg


def stored_metadata(root, variant: str = "default") -> dict:
    with open(os.path.join(folder_importer.dataset_dir(str(root / "tfds"), variant), "metadata.json")) as f:
        return json.load(f)


def cli(root, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seg_jax.data.folder", "--images", str(root / "images"),
               "--labels", str(root / "labels"), "--out", str(root / "tfds"), *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- item 7: a conversion records what it was made from


def test_conversion_records_its_arguments_and_sources(tmp_path):
    write_folder(tmp_path)
    result = convert(tmp_path, class_names=("sky", "tree", "road"), val_fraction=0.25, seed=3,
                     instances=str(tmp_path / "instances"))
    assert result.written and result.split_sizes == {"train": 3, "validation": 1}
    record = stored_metadata(tmp_path)["conversion"]
    assert {key: record[key] for key in ("num_classes", "class_names", "val_fraction", "seed", "instances",
                                         "num_files", "images_dir", "instances_dir")} == {
        "num_classes": 3, "class_names": ["sky", "tree", "road"], "val_fraction": 0.25, "seed": 3,
        "instances": True, "num_files": 12, "images_dir": str(tmp_path / "images"),
        "instances_dir": str(tmp_path / "instances")}
    assert len(record["sources_sha256"]) == 64


def test_a_different_conversion_into_the_same_place_is_refused_naming_what_differs(tmp_path):
    write_folder(tmp_path)
    convert(tmp_path, val_fraction=0.25)
    before = stored_metadata(tmp_path)
    with pytest.raises(folder_importer.ConversionMismatchError) as error:
        convert(tmp_path, num_classes=2, class_names=("a", "b"), val_fraction=0.5)
    message = str(error.value)
    assert "num_classes 3 → 2" in message and "class_names (class_0, class_1, class_2) → (a, b)" in message
    assert "val_fraction 0.25 → 0.5" in message and "--overwrite" in message
    assert stored_metadata(tmp_path) == before  # nothing replaced
    # The sources: a rewritten label (another size on disk) and an added image are seen.
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp_path / "labels" / "img1.png")
    with pytest.raises(folder_importer.ConversionMismatchError, match="sources_sha256 .*source files .*differ"):
        convert(tmp_path, val_fraction=0.25)
    write_folder(tmp_path, count=5)
    with pytest.raises(folder_importer.ConversionMismatchError, match="num_files 8 → 10"):
        convert(tmp_path, val_fraction=0.25)


def test_an_identical_conversion_is_a_no_op_that_says_so(tmp_path, caplog):
    write_folder(tmp_path)
    convert(tmp_path)
    info = os.path.join(folder_importer.dataset_dir(str(tmp_path / "tfds")), "dataset_info.json")
    written_at = os.stat(info).st_mtime_ns
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = convert(tmp_path)
    assert not result.written and result.split_sizes == {"train": 3, "validation": 1}
    assert "already holds this conversion" in caplog.text and "nothing written" in caplog.text
    assert os.stat(info).st_mtime_ns == written_at


def test_overwrite_replaces_the_conversion_and_what_was_derived_from_it(tmp_path):
    write_folder(tmp_path)
    cfg = folder_config(tmp_path, instances=str(tmp_path / "instances"))
    cfg.targets = "border"
    border = data.resolve(cfg)  # converts, and derives the border targets beside it
    border.class_pixel_counts()
    derived_dir = border.directory
    assert os.path.isdir(derived_dir)
    convert(tmp_path, num_classes=4, instances=str(tmp_path / "instances"), overwrite=True)
    assert stored_metadata(tmp_path)["class_names"] == ["class_0", "class_1", "class_2", "class_3"]
    assert not os.path.exists(derived_dir)  # stale derived copy removed, rebuilt on next use
    cfg.folder.num_classes = 4
    assert os.path.isdir(data.resolve(cfg).directory)


def test_a_failed_overwrite_keeps_the_old_conversion(tmp_path):
    write_folder(tmp_path)
    convert(tmp_path)
    with pytest.raises(folder_importer.FolderDatasetError, match="img0.png"):
        convert(tmp_path, num_classes=2, overwrite=True)  # labels hold class 2
    assert data.resolve(folder_config(tmp_path)).split_sizes == {"train": 3, "validation": 1}
    assert not [name for name in os.listdir(tmp_path / "tfds" / "seg_jax_folder" / "default") if name != "1.0.0"]


def test_a_conversion_without_a_record_is_not_taken_for_the_same(tmp_path):
    write_folder(tmp_path)
    convert(tmp_path)
    path = os.path.join(folder_importer.dataset_dir(str(tmp_path / "tfds")), "metadata.json")
    with open(path, "w") as f:  # as an older seg_jax wrote it
        json.dump({"class_names": ["class_0", "class_1", "class_2"]}, f)
    with pytest.raises(folder_importer.ConversionMismatchError, match="records no arguments"):
        convert(tmp_path)
    assert convert(tmp_path, overwrite=True).written


def test_cli_overwrite_flag(tmp_path, capsys):
    write_folder(tmp_path)
    base = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
            str(tmp_path / "tfds")]
    assert folder.main([*base, "--num_classes", "3"]) == 0
    assert folder.main([*base, "--num_classes", "3"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert folder.main([*base, "--num_classes", "4"]) == 2
    assert "error: " in capsys.readouterr().err
    assert folder.main([*base, "--num_classes", "4", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "replacing the conversion" in out and "num_classes 3 → 4" in out and "wrote " in out


# ---------------------------------------------------------------- item 8: configs that disagree with the conversion


@pytest.mark.parametrize("change,message", [
    ({"num_classes": 2}, "num_classes 3 → 2"),
    ({"num_classes": 5}, "num_classes 3 → 5"),
    ({"class_names": ("a", "b", "c")}, "class_names (class_0, class_1, class_2) → (a, b, c)"),
    ({"val_fraction": 0.5}, "val_fraction 0.25 → 0.5"),
])
def test_resolve_refuses_folder_settings_that_disagree_with_the_conversion(tmp_path, change, message):
    write_folder(tmp_path)
    data.resolve(folder_config(tmp_path, val_fraction=0.25))  # converts
    with pytest.raises(folder_importer.ConversionMismatchError, match="stored → config") as error:
        data.resolve(folder_config(tmp_path, **{"val_fraction": 0.25, **change}))
    assert message in str(error.value)
    # Without source folders in the config (converted by the CLI), num_classes and class_names still count.
    cfg = folder_config(tmp_path, **{"val_fraction": 0.25, **change})
    cfg.folder.images = cfg.folder.labels = None
    if "val_fraction" in change:
        data.resolve(cfg)
    else:
        with pytest.raises(folder_importer.ConversionMismatchError, match=re.escape(message)):
            data.resolve(cfg)


def test_resolve_sees_changed_sources_and_accepts_a_copied_dataset(tmp_path):
    write_folder(tmp_path)
    cfg = folder_config(tmp_path)
    data.resolve(cfg)
    data.resolve(cfg)  # the same sources: fine
    write_folder(tmp_path, count=5)
    with pytest.raises(folder_importer.ConversionMismatchError, match="num_files 8 → 10"):
        data.resolve(cfg)
    cfg.folder.images, cfg.folder.labels = str(tmp_path / "elsewhere" / "images"), str(tmp_path / "nowhere")
    assert data.resolve(cfg).split_sizes == {"train": 3, "validation": 1}  # sources absent here: not compared


# ---------------------------------------------------------------- item 9: no validation split


@pytest.mark.parametrize("count,val_fraction", [(3, 0.0), (1, 0.1), (1, 0.9)])
def test_no_validation_split_and_evaluating_on_it_is_refused_clearly(tmp_path, count, val_fraction, caplog):
    write_folder(tmp_path, count=count)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ds = data.resolve(folder_config(tmp_path, val_fraction=val_fraction))
    assert ds.split_sizes == {"train": count} and "no validation split" in caplog.text
    with pytest.raises(KeyError, match=r"split 'validation' not in dataset 'folder'; available splits: train "
                                       r"\(converted with val_fraction .* no validation split"):
        ds.source("validation")
    assert len(ds.source("train")) == count


def test_cli_with_val_fraction_zero(tmp_path, capsys):
    write_folder(tmp_path)
    assert folder.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                        str(tmp_path / "tfds"), "--num_classes", "3", "--val_fraction", "0"]) == 0
    assert "(train: 4)" in capsys.readouterr().out


# ---------------------------------------------------------------- item 10: alpha dropped, said once


def test_rgba_images_lose_their_alpha_with_one_warning(tmp_path, caplog):
    pixels = write_folder(tmp_path, count=5, rgba=(1, 3, 4))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        convert(tmp_path, val_fraction=0.0)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 of 5 images have an alpha channel" in warnings[0].getMessage()
    assert str(tmp_path / "images" / "img1.png") in warnings[0].getMessage()
    source = data.resolve(folder_config(tmp_path, val_fraction=0.0)).source("train")
    for index in range(len(source)):
        example = source[index]
        np.testing.assert_array_equal(example["image"], pixels[example["id"]])


def test_no_alpha_warning_for_rgb_images(tmp_path, caplog):
    write_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        convert(tmp_path)
    assert "alpha" not in caplog.text


# ---------------------------------------------------------------- item 15: quiet conversion, errors on their own line


def test_cli_prints_no_tfds_download_lines_or_progress_bars(tmp_path):
    write_folder(tmp_path, rgba=(2,))
    done = cli(tmp_path, "--num_classes", "3")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    for noise in ("Downloading and preparing", "downloaded and prepared", "Generating", "Shuffling",
                  "Using custom data configuration", "\r"):
        assert noise not in output
    assert done.stdout.startswith("wrote ") and done.stderr.startswith("warning: 1 of 4 images")
    # An error, after the alpha warning, starts a line of its own and is the last line.
    failed = cli(tmp_path, "--num_classes", "2", "--variant", "two")
    assert failed.returncode == 2
    lines = failed.stderr.splitlines()
    assert lines[-1].startswith("error: label ") and "img0.png" in lines[-1]
    assert "Generating" not in failed.stderr and "\r" not in failed.stderr and "Traceback" not in failed.stderr


def test_quiet_preparation_restores_progress_bars_and_log_levels():
    from tensorflow_datasets.core.utils import tqdm_utils
    absl_logger = logging.getLogger("absl")
    level, active = absl_logger.level, tqdm_utils._active
    with pytest.raises(RuntimeError):
        with tfds_format.quiet_preparation():
            assert not tqdm_utils._active and absl_logger.level == logging.ERROR
            raise RuntimeError
    assert (tqdm_utils._active, absl_logger.level) == (active, level)


def test_derived_targets_of_a_hand_replaced_conversion_are_refused(tmp_path):
    import shutil
    write_folder(tmp_path)
    cfg = folder_config(tmp_path, instances=str(tmp_path / "instances"))
    cfg.targets = "border"
    derived_dir = data.resolve(cfg).directory
    shutil.rmtree(folder_importer.dataset_dir(str(tmp_path / "tfds")))  # by hand, not --overwrite
    write_folder(tmp_path, count=5)
    plain = cfg.copy_and_resolve_references()
    plain.targets = "semantic"
    data.resolve(plain)  # converts the new sources
    with pytest.raises(ValueError, match=f"derived targets in {re.escape(derived_dir)} were made from another"):
        data.resolve(cfg)
