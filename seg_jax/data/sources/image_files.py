"""Reading users' image files: 8-bit, 16-bit and float images, and lossless label / instance maps.

One reader for the folder converter (`folder_importer`) and for `--mode=predict` (`seg_jax.predict.folder`), so a
new image is read exactly as the training images were:

    .tif / .tiff         tifffile (8/16/32-bit integer and float, grey or RGB(A), chunky or planar); a multi-page
                         TIFF (a stack, a time series) is refused, naming the file and its page count
    .png / .bmp / .jpg   Pillow (16-bit grey PNG, mode I;16, included; a 16-bit colour PNG is refused: Pillow keeps
                         only 8 bits of each channel, so save it as a TIFF)

Images that are not uint8 (16-bit microscopy, float) are scaled to uint8 by the conversion's intensity scaling,
stored with the dataset and applied again at prediction (`intensity_scaling`, `to_uint8`):

    {"method": "percentile", "low": p_lo, "high": p_hi}   per image, its p_lo / p_hi percentiles (of all its
                                                          channels' pixels) map to 0 / 255 (default 1, 99.8)
    {"method": "range", "low": a, "high": b}              fixed values a / b map to 0 / 255 (e.g. 0, 4095 for 12 bit)

    uint8 = rint(255 * clip((x - lo) / (hi - lo), 0, 1)), and 0 everywhere when hi <= lo (a constant image)

uint8 images are stored as they are (the scaling is for the images that need it). Labels and instance maps must be
lossless integer maps: a JPEG label is refused with the reason.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
INTENSITY_METHODS = ("percentile", "range")
DEFAULT_PERCENTILES = (1.0, 99.8)
_IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16L", "I;16B", "I", "F")
_MAP_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I")  # single-channel integer maps
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOSSY_LABEL_REASON = ("JPEG's lossy compression changes pixel values (class and instance ids blur into other ids "
                      "around every edge); save label and instance maps as PNG or TIFF")


class FolderDatasetError(ValueError):
    """A problem with the user's image/label folders; the message names the file at fault."""


def intensity_scaling(method: str | None, low: float | None = None,
                      high: float | None = None) -> dict[str, Any] | None:
    """The checked intensity scaling `{"method", "low", "high"}` of the conversion options, None for no scaling.

    Raises:
        FolderDatasetError: an unknown method, `range` without both values, percentiles outside [0, 100] or
            low >= high.
    """
    if method is None:
        if low is not None or high is not None:
            raise FolderDatasetError("intensity low/high given without an intensity method "
                                     f"({' or '.join(INTENSITY_METHODS)})")
        return None
    if method not in INTENSITY_METHODS:
        raise FolderDatasetError(f"intensity method {method!r} is not one of {', '.join(INTENSITY_METHODS)}")
    if method == "percentile":
        low = DEFAULT_PERCENTILES[0] if low is None else low
        high = DEFAULT_PERCENTILES[1] if high is None else high
    if low is None or high is None:
        raise FolderDatasetError("intensity method 'range' needs both low and high (the values that map to 0 and "
                                 "255, e.g. 0 and 4095 for 12-bit images)")
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise FolderDatasetError(f"intensity low {low:g} must be below high {high:g} (both finite)")
    if method == "percentile" and not 0 <= low < high <= 100:
        raise FolderDatasetError(f"intensity percentiles must satisfy 0 <= low < high <= 100, got {low:g}, {high:g}")
    return {"method": method, "low": low, "high": high}


def to_uint8(pixels: np.ndarray, scaling: Mapping[str, Any]) -> np.ndarray:
    """uint8 pixels of any-dtype `pixels` by `scaling` (module docstring: the formula)."""
    values = np.asarray(pixels, np.float64)
    if scaling["method"] == "percentile":
        lo, hi = np.percentile(values, [scaling["low"], scaling["high"]])
    else:
        lo, hi = scaling["low"], scaling["high"]
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.rint(255.0 * np.clip((values - lo) / (hi - lo), 0.0, 1.0)).astype(np.uint8)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _tiff_pixels(path: str, what: str) -> np.ndarray:
    import tifffile  # only TIFF needs it
    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            if pages != 1:
                raise FolderDatasetError(f"{what} {path!r} is a multi-page TIFF ({pages} pages); one image per file "
                                         "is expected: save each page as its own file")
            page = tif.pages[0]
            pixels, axes = page.asarray(), page.axes
    except FolderDatasetError:
        raise
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise FolderDatasetError(f"cannot read {what} {path!r}: {error}") from None
    if axes.startswith("S") and pixels.ndim == 3:  # planar (channels first) to channels last
        pixels = np.moveaxis(pixels, 0, -1)
    return pixels


def _png_colour_depth(path: str) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file's header, None for another format."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return None
    return head[24], head[25]


def _pillow_image(path: str, modes: Sequence[str], what: str) -> Image.Image:
    depth = _png_colour_depth(path) if os.path.isfile(path) else None
    if depth is not None and depth[0] == 16 and depth[1] in (2, 4, 6):  # 16-bit RGB, grey + alpha, RGBA
        raise FolderDatasetError(f"{what} {path!r} is a 16-bit colour PNG, which Pillow reads with only 8 bits per "
                                 "channel; save it as a 16-bit TIFF instead (tifffile reads all 16 bits)")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise FolderDatasetError(f"cannot read {what} {path!r}: {error}") from None
    if image.mode not in modes:
        raise FolderDatasetError(f"{what} {path!r} has mode {image.mode}; expected one of {', '.join(modes)}")
    return image


def read_pixels(path: str, *, what: str = "image") -> np.ndarray:
    """The pixels of one image file as stored: [H, W] or [H, W, C], its own dtype (8-bit Pillow images other than
    grey or RGB(A), e.g. palette or CMYK, as uint8 RGB).

    Raises:
        FolderDatasetError: an unreadable file, a multi-page TIFF, a 16-bit colour PNG (each message names the file).
    """
    if _suffix(path) in TIFF_SUFFIXES:
        return _tiff_pixels(path, what)
    image = _pillow_image(path, _IMAGE_MODES, what)
    if image.mode in ("1", "P", "CMYK", "YCbCr"):
        image = image.convert("RGB")
    return np.asarray(image)


def _channels(pixels: np.ndarray, path: str) -> np.ndarray:
    """Grey [H, W] of [H, W] / [H, W, 1] / grey + alpha [H, W, 2]; [H, W, 3] of RGB or RGBA (alpha dropped)."""
    channels = pixels.shape[-1] if pixels.ndim == 3 else None
    if pixels.ndim == 2 or channels in (1, 2):
        return pixels if pixels.ndim == 2 else pixels[..., 0]
    if channels in (3, 4):
        return pixels[..., :3]
    raise FolderDatasetError(f"image {path!r} has shape {pixels.shape}; expected [H, W] grey or [H, W, 3 or 4] "
                             "colour (for other channel counts, save the channels to show as an RGB or grey file)")


def read_image(path: str, *, intensity: Mapping[str, Any] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file (grey and palette expanded, alpha dropped); images that are not
    uint8 (16-bit, float) scaled by `intensity` (`intensity_scaling`; the module docstring gives the formula),
    before grey is expanded, so that percentiles are those of the image's own pixels.

    Raises:
        FolderDatasetError: as `read_pixels`; a non-uint8 image without `intensity`; non-finite pixels.
    """
    pixels = _channels(read_pixels(path), path)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        if intensity is None:
            raise FolderDatasetError(
                f"image {path!r} has {pixels.dtype} pixels (range {pixels.min()}..{pixels.max()}), which need an "
                "intensity scaling to 8 bits: convert with --intensity percentile [--intensity_low 1 "
                "--intensity_high 99.8] or --intensity range --intensity_low A --intensity_high B "
                "(data.folder.intensity.method/low/high)")
        if not np.isfinite(pixels).all():
            raise FolderDatasetError(f"image {path!r} has non-finite (NaN or infinite) pixels")
        pixels = to_uint8(pixels, intensity)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels)


def read_map(path: str, *, what: str) -> np.ndarray:
    """int64 [H, W] ids of a lossless single-channel integer map (class labels or instance ids): PNG (8 or 16 bit)
    or TIFF.

    Raises:
        FolderDatasetError: a JPEG (lossy: `LOSSY_LABEL_REASON`), an unreadable or multi-page file, more than one
            channel, or float pixels (each message names the file).
    """
    if _suffix(path) in LOSSY_SUFFIXES:
        raise FolderDatasetError(f"{what} {path!r} is a JPEG: {LOSSY_LABEL_REASON}")
    if _suffix(path) in TIFF_SUFFIXES:
        ids = _tiff_pixels(path, what)
    else:
        ids = np.asarray(_pillow_image(path, _MAP_MODES, what))
    if ids.ndim == 3 and ids.shape[-1] == 1:
        ids = ids[..., 0]
    if ids.ndim != 2:
        raise FolderDatasetError(f"{what} {path!r} has shape {ids.shape}; expected one channel of ids [H, W]")
    if ids.dtype.kind not in "biu":
        raise FolderDatasetError(f"{what} {path!r} has {ids.dtype} pixels; expected integer ids")
    return ids.astype(np.int64)
