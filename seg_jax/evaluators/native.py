"""Scoring at each image's native resolution when the network predicts at `data.eval_size`.

With `data.eval_size` set, an eval batch holds each image shrunk to fit (aspect kept) and padded bottom/right to
the eval size, and beside it the untouched truth (`data.eval_batches`):

    native_label      int32 [b, H, W]  the label at its native size, padded with the ignore index
    native_instances  int32 [b, H, W]  instance ids at the native size, padded with 0 (datasets with instances)
    native_size       int32 [b, 2]     (height, width) px of each image's native label
    fitted_size       int32 [b, 2]     (height, width) px of the image inside the padded eval-size input

(H, W) is the largest native size of the split, so every batch of the split has one shape and the scoring
compiles once. The evaluators crop the padding off the network's outputs and resize them bilinearly (half-pixel
centres, edge values repeated: `jax.image.resize` / PyTorch `align_corners=False`) to each image's native size,
then score against the native truth, as MMSegmentation and detectron2 do. Beyond an image's native size the
resized values repeat its edge; the truth is ignore / background there, so nothing there is counted.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

# Keys the pmapped evaluator functions need besides image / label / mask.
DEVICE_KEYS = ("native_label", "native_size", "fitted_size")


def is_native(batch: Mapping[str, Any]) -> bool:
    """Whether `batch` carries native-resolution truth (`data.eval_size` is set)."""
    return "native_label" in batch


def resolution_definition(data_cfg: Any) -> str:
    """The definition every evaluator states: at which resolution its metrics are computed."""
    size = data_cfg.get("eval_size", None)
    if size is None:
        return "scored at each image's native resolution (data.eval_size unset: images are not resized)"
    return (f"scored at each image's native resolution: the network predicts at data.eval_size "
            f"{int(size[0])}x{int(size[1])} px (each image shrunk to fit, aspect kept, then padded); its outputs "
            "are cropped to the image, resized bilinearly to the native size and compared with the untouched labels")


def _axis(in_size: jax.Array, out_size: jax.Array, length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Source rows (i0, i1) and weight of i1, for `length` output rows of an axis resized in_size -> out_size."""
    position = (jnp.arange(length, dtype=jnp.float32) + 0.5) * (in_size / out_size) - 0.5
    position = jnp.clip(position, 0.0, (in_size - 1).astype(jnp.float32))
    low = jnp.floor(position).astype(jnp.int32)
    return low, jnp.minimum(low + 1, in_size - 1), position - low


def resize_region(values: jax.Array, *, region: jax.Array, size: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """The top-left `region` (rows, cols) of `values` [h, w, C] resized bilinearly to `size` (rows, cols), inside a
    float32 [shape[0], shape[1], C] array whose rows/cols beyond `size` repeat the last one.

    `region` and `size` are traced int32 [2], `shape` static, so one compiled program serves every image size.
    Half-pixel centres and clamped edges, as `jax.image.resize(values[:rows, :cols], size, "bilinear")` when
    upsampling (the only direction `data.eval_size` needs: images are only ever shrunk to fit).
    """
    values = values.astype(jnp.float32)
    top, bottom, wy = _axis(region[0], size[0], shape[0])
    left, right, wx = _axis(region[1], size[1], shape[1])
    rows = values[top] * (1 - wy)[:, None, None] + values[bottom] * wy[:, None, None]
    return rows[:, left] * (1 - wx)[None, :, None] + rows[:, right] * wx[None, :, None]


def to_native(values: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """float32 [b, H, W, C] of eval-size outputs `values` [b, h, w, C] resized to each image's native size
    (`resize_region` per image; H, W those of `batch["native_label"]`)."""
    shape = tuple(batch["native_label"].shape[1:3])
    return jax.vmap(lambda v, r, s: resize_region(v, region=r, size=s, shape=shape))(
        values, batch["fitted_size"], batch["native_size"])


def native_argmax(values: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """int32 [b, H, W]: the argmax over classes of `values` [b, h, w, N] (logits or probabilities) resized to each
    image's native size. One image at a time (`lax.map`), so one [H, W, N] float32 array is alive at once
    (Cityscapes 1024x2048x19: 159 MB) rather than the batch's."""
    shape = tuple(batch["native_label"].shape[1:3])

    def one(args):
        v, region, size = args
        return jnp.argmax(resize_region(v, region=region, size=size, shape=shape), -1).astype(jnp.int32)

    return jax.lax.map(one, (values, batch["fitted_size"], batch["native_size"]))


def scored(values: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(prediction int32, truth `{"label", "mask"}`) to score: at the native resolution when `batch` has it
    (`native_argmax`, `native_label`), else the argmax of `values` [b, h, w, N] against `batch["label"]`."""
    if not is_native(batch):
        return jnp.argmax(values, -1).astype(jnp.int32), {"label": batch["label"], "mask": batch["mask"]}
    return native_argmax(values, batch), {"label": batch["native_label"], "mask": batch["mask"]}


def crop(array: np.ndarray, size: Any) -> np.ndarray:
    """The top-left `size` = (height, width) px of a host array [H, W, ...]."""
    return array[:int(size[0]), :int(size[1])]


def native_picture(image: np.ndarray, *, fitted_size: Any, native_size: Any) -> np.ndarray:
    """uint8 [h, w, 3] picture of an eval-size input image uint8 [eh, ew, 3] at its native size: padding cropped,
    then resized bilinearly (Pillow), to sit beside native-resolution maps."""
    region = crop(image, fitted_size)
    if region.shape[:2] == tuple(int(s) for s in native_size):
        return np.ascontiguousarray(region)
    resized = Image.fromarray(np.ascontiguousarray(region)).resize((int(native_size[1]), int(native_size[0])),
                                                                   Image.BILINEAR)
    return np.asarray(resized, np.uint8)
