"""Image formats for real data (issue 14 §5): 16-bit and float PNG / TIFF images scaled to 8 bits by the
conversion's intensity scaling (checked against the formula computed here), the scaling stored with the dataset
and applied again by prediction, multi-page TIFFs and JPEG labels refused with the reason, 16-bit instance ids."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from seg_jax import data
from seg_jax.data import folder
from seg_jax.data.sources import folder_importer, image_files
from seg_jax.predict.predictor import image_intensity

SHAPE = (6, 7)


def _dirs(root):
    for directory in ("images", "labels", "instances"):
        os.makedirs(root / directory, exist_ok=True)


def _labels(root, stems, *, instances: bool = False):
    """Labels 0/1 (some ignore) and, with `instances`, ids above 255 under the class-1 pixels, per stem."""
    out = {}
    for n, stem in enumerate(stems):
        label = np.zeros(SHAPE, np.uint8)
        label[1:4, 2:6] = 1
        label[5, 0] = 255
        Image.fromarray(label).save(root / "labels" / f"{stem}.png")
        ids = np.where(label == 1, 300 + 1000 * n, 0).astype(np.uint16)
        if instances:
            Image.fromarray(ids).save(root / "instances" / f"{stem}.png")
        out[stem] = (label, ids)
    return out


def _convert(root, **options):
    options = {"num_classes": 2, "out": str(root / "tfds"), "val_fraction": 0.0, **options}
    return folder_importer.convert_folder(images=str(root / "images"), labels=str(root / "labels"), **options)


def _stored(root) -> dict[str, dict]:
    cfg = data.base_config("folder")
    cfg.data_dir = str(root / "tfds")
    source = data.resolve(cfg).source("train")
    return {source[i]["id"]: source[i] for i in range(len(source))}


def _percentile_scaled(x: np.ndarray, low: float, high: float) -> np.ndarray:
    lo, hi = np.percentile(x.astype(np.float64), [low, high])
    return np.rint(255 * np.clip((x - lo) / (hi - lo), 0, 1)).astype(np.uint8)


def _range_scaled(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.rint(255 * np.clip((x.astype(np.float64) - low) / (high - low), 0, 1)).astype(np.uint8)


def test_16_bit_png_and_tiff_images_are_scaled_by_percentiles_as_the_formula_says(tmp_path):
    _dirs(tmp_path)
    rng = np.random.default_rng(0)
    grey = rng.integers(100, 60000, SHAPE).astype(np.uint16)
    colour = rng.integers(0, 4096, (*SHAPE, 3)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "images" / "grey.png")  # Pillow mode I;16
    tifffile.imwrite(tmp_path / "images" / "colour.tif", colour, photometric="rgb")
    _labels(tmp_path, ["grey", "colour"])
    _convert(tmp_path, intensity={"method": "percentile", "low": 2, "high": 98})
    stored = _stored(tmp_path)
    np.testing.assert_array_equal(stored["grey"]["image"], np.repeat(_percentile_scaled(grey, 2, 98)[..., None], 3, -1))
    np.testing.assert_array_equal(stored["colour"]["image"], _percentile_scaled(colour, 2, 98))
    assert stored["grey"]["image"].min() == 0 and stored["grey"]["image"].max() == 255


def test_a_fixed_range_scales_float_and_planar_16_bit_tiffs(tmp_path):
    _dirs(tmp_path)
    rng = np.random.default_rng(1)
    values = rng.normal(0.5, 0.4, SHAPE).astype(np.float32)  # some below 0 and above 1: clipped
    planar = rng.integers(0, 5000, (3, *SHAPE)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "images" / "float.tiff", values)
    tifffile.imwrite(tmp_path / "images" / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    _labels(tmp_path, ["float", "planar"])
    _convert(tmp_path, intensity={"method": "range", "low": 0.0, "high": 4095.0})
    stored = _stored(tmp_path)
    np.testing.assert_array_equal(stored["planar"]["image"], _range_scaled(np.moveaxis(planar, 0, -1), 0, 4095))
    np.testing.assert_array_equal(stored["float"]["image"][..., 0], _range_scaled(values, 0, 4095))
    by_hand = image_files.to_uint8(np.array([-1.0, 0.0, 1.0, 2.0, 3.0]), {"method": "range", "low": 0, "high": 2})
    assert by_hand.tolist() == [0, 0, 128, 255, 255]  # rint(127.5) = 128


def test_the_scaling_is_stored_with_the_dataset_and_prediction_reads_new_images_alike(tmp_path):
    _dirs(tmp_path)
    image = np.random.default_rng(2).integers(0, 65535, SHAPE).astype(np.uint16)
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    _labels(tmp_path, ["a"])
    _convert(tmp_path, intensity={"method": "percentile"})
    path = folder_importer.dataset_dir(str(tmp_path / "tfds"))
    expected = {"method": "percentile", "low": 1.0, "high": 99.8}  # the defaults, written out
    assert folder_importer.stored_intensity(path) == expected
    cfg = data.base_config("folder")
    cfg.data_dir = str(tmp_path / "tfds")
    config = type("Config", (), {"data": cfg})()
    assert image_intensity(config) == expected  # what --mode=predict applies
    np.testing.assert_array_equal(image_files.read_image(str(tmp_path / "images" / "a.tif"), intensity=expected),
                                  _stored(tmp_path)["a"]["image"])
    with pytest.raises(folder_importer.ConversionMismatchError, match="intensity"):
        _convert(tmp_path, intensity={"method": "range", "low": 0, "high": 1000})


def test_the_data_config_converts_with_its_intensity_and_prediction_falls_back_to_it(tmp_path):
    _dirs(tmp_path)
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.arange(42, dtype=np.uint16).reshape(SHAPE) * 100)
    _labels(tmp_path, ["a"])
    cfg = data.base_config("folder")
    cfg.data_dir = str(tmp_path / "tfds")
    config = type("Config", (), {"data": cfg})()
    cfg.folder.update({"images": str(tmp_path / "images"), "labels": str(tmp_path / "labels"), "num_classes": 2,
                       "val_fraction": 0.0})
    cfg.folder.intensity.method = "range"
    cfg.folder.intensity.low = 0
    cfg.folder.intensity.high = 4100
    assert image_intensity(config) == {"method": "range", "low": 0.0, "high": 4100.0}  # not converted yet
    ds = data.resolve(cfg)
    np.testing.assert_array_equal(ds.source("train")[0]["image"][..., 0],
                                  _range_scaled(np.arange(42).reshape(SHAPE) * 100, 0, 4100))
    cfg.folder.intensity.high = 5000
    with pytest.raises(folder_importer.ConversionMismatchError, match="intensity"):
        data.resolve(cfg)


def test_16_bit_instance_ids_in_png_and_tiff_are_kept(tmp_path):
    _dirs(tmp_path)
    for stem in ("p", "t"):
        Image.fromarray(np.full((*SHAPE, 3), 50, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    truth = _labels(tmp_path, ["p", "t"], instances=True)
    os.remove(tmp_path / "instances" / "t.png")
    tifffile.imwrite(tmp_path / "instances" / "t.tif", truth["t"][1])
    _convert(tmp_path, instances=str(tmp_path / "instances"))
    stored = _stored(tmp_path)
    for stem in ("p", "t"):
        np.testing.assert_array_equal(stored[stem]["instances"], truth[stem][1])
        np.testing.assert_array_equal(stored[stem]["label"], truth[stem][0])
    assert stored["t"]["instances"].max() == 1300


def test_a_16_bit_label_tiff_with_class_ids_is_read(tmp_path):
    _dirs(tmp_path)
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    label = np.zeros(SHAPE, np.uint16)
    label[2:4, 1:3] = 1
    tifffile.imwrite(tmp_path / "labels" / "a.tif", label)
    _convert(tmp_path)
    np.testing.assert_array_equal(_stored(tmp_path)["a"]["label"], label)


def test_a_multi_page_tiff_is_refused_naming_the_file_and_its_pages(tmp_path):
    _dirs(tmp_path)
    stack = tmp_path / "images" / "stack.tif"
    tifffile.imwrite(stack, np.zeros((4, *SHAPE), np.uint16), photometric="minisblack")
    _labels(tmp_path, ["stack"])
    with pytest.raises(folder_importer.FolderDatasetError, match=r"stack\.tif.*multi-page TIFF \(4 pages\)"):
        _convert(tmp_path, intensity={"method": "percentile"})


def test_jpeg_labels_are_refused_with_the_reason(tmp_path):
    _dirs(tmp_path)
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(tmp_path / "labels" / "a.jpg")
    with pytest.raises(folder_importer.FolderDatasetError, match=r"label .*a\.jpg.* is a JPEG: .*lossy"):
        _convert(tmp_path)
    with pytest.raises(folder_importer.FolderDatasetError, match="lossy"):
        image_files.read_map(str(tmp_path / "labels" / "a.jpg"), what="label")


def test_16_bit_images_without_a_scaling_are_refused_saying_how_to_scale(tmp_path):
    _dirs(tmp_path)
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.full(SHAPE, 4000, np.uint16))
    _labels(tmp_path, ["a"])
    with pytest.raises(folder_importer.FolderDatasetError, match=r"a\.tif.*uint16.*--intensity percentile"):
        _convert(tmp_path)


def _png_16_bit_rgb(path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (neither Pillow nor imageio writes one)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_a_16_bit_colour_png_is_refused_rather_than_truncated(tmp_path):
    path = tmp_path / "rgb16.png"
    _png_16_bit_rgb(path, np.full((2, 3, 3), 1000, np.uint16))
    assert Image.open(path).mode == "RGB"  # what Pillow would silently give: 8 bits per channel
    with pytest.raises(folder_importer.FolderDatasetError, match="16-bit colour PNG.*TIFF"):
        image_files.read_image(str(path), intensity={"method": "percentile", "low": 1.0, "high": 99.0})


@pytest.mark.parametrize("options, message", [
    ({"method": "gamma"}, "not one of percentile, range"),
    ({"method": "range", "low": 0}, "needs both low and high"),
    ({"method": "percentile", "low": 50, "high": 40}, "below high"),
    ({"method": "percentile", "low": -1, "high": 40}, r"0 <= low < high <= 100"),
    ({"low": 1}, "without an intensity method"),
    ({"method": "range", "low": 0, "high": 1, "gain": 2}, "unknown intensity option"),
])
def test_bad_intensity_options_are_named(options, message):
    with pytest.raises(folder_importer.FolderDatasetError, match=message):
        folder_importer.intensity_option(options)


def test_cli_intensity_flags(tmp_path, capsys):
    _dirs(tmp_path)
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.arange(42, dtype=np.uint16).reshape(SHAPE))
    _labels(tmp_path, ["a"])
    argv = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--num_classes", "2",
            "--out", str(tmp_path / "tfds"), "--val_fraction", "0"]
    assert folder.main(argv) == 2 and "--intensity" in capsys.readouterr().err
    assert folder.main(argv + ["--intensity", "range", "--intensity_low", "0", "--intensity_high", "41"]) == 0
    np.testing.assert_array_equal(_stored(tmp_path)["a"]["image"][..., 1],
                                  _range_scaled(np.arange(42).reshape(SHAPE), 0, 41))


def test_a_bad_intensity_setting_is_a_config_error_naming_the_field(make_config):
    from seg_jax.train import validate
    config = make_config()
    config.data.folder.intensity.method = "gamma"
    with pytest.raises(validate.ConfigError, match=r"data\.folder\.intensity.*not one of percentile, range"):
        validate.validate_config(config, num_devices=1, process_count=1)
    config.data.folder.intensity.method = "range"
    config.data.folder.intensity.low = 0
    config.data.folder.intensity.high = 4095
    validate.validate_config(config, num_devices=1, process_count=1)
