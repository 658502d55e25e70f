"""`load_exported`: an exported run (`model.jaxexport` + `export.json`) back as a callable.

Needs only numpy and jax (`jax.export.deserialize`) — no seg_jax model code, no flax — so this one file can be
copied to a machine where seg_jax is not installed. The jax there must be able to read the serialisation of the
jax that exported (see `export.json`'s `jax_version`; jax reads exports of older versions for a few years).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import jax
import numpy as np
from jax import export as jax_export

MODEL_FILE = "model.jaxexport"
METADATA_FILE = "export.json"
FORMAT = "seg_jax.export/1"


class ExportError(ValueError):
    """An export that cannot be made, written or read, or inputs it cannot take; the message names the thing."""


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """An exported predict function. Call it with uint8 RGB images `[B, H, W, 3]` (numpy or jax); it returns numpy:

    semantic: float32 class probabilities `[B, H, W, N]` (softmax; `metadata["postprocess"]` names the instance
        post-processing the run's config applies to them on the host, if any).
    detection: a dict of fixed-size arrays per image: boxes float32 `[B, K, 4]` (x1, y1, x2, y2 pixels), scores
        float32 `[B, K]`, classes int32 `[B, K]`, valid bool `[B, K]`, masks float32 `[B, K, H, W]` probabilities.

    The normalisation (`metadata["normalization"]`) happens inside. `metadata` is `export.json` as a dict.
    """

    exported: jax_export.Exported
    metadata: dict
    call: Callable[[Any], Any]  # `jax.jit(exported.call)`: compiled once per input shape, not on every call

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        """`[B, H, W, 3]` with a name (str) for each dimension the function takes at any size, else its pixels."""
        return tuple(d if isinstance(d, int) else str(d) for d in self.exported.in_avals[0].shape)

    def __call__(self, images: Any) -> Any:
        images = check_images(images, expected=self.input_shape)
        return jax.tree_util.tree_map(np.asarray, self.call(images))


def check_images(images: Any, *, expected: tuple[int | str, ...]) -> Any:
    """`images` if they are uint8 `[B, H, W, 3]` matching every fixed dimension of `expected`, else `ExportError`
    naming the mismatch (clearer than the shape error of the deserialised function)."""
    shape, dtype = tuple(np.shape(images)), np.dtype(getattr(images, "dtype", np.asarray(images).dtype))
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ExportError(f"the exported model takes uint8 RGB images [B, H, W, 3]; got {dtype} {list(shape)}")
    for axis, (got, want) in enumerate(zip(shape, expected)):
        if isinstance(want, int) and got != want:
            name = ("batch size", "height", "width")[axis]
            raise ExportError(f"the exported model was exported for {name} {want}, got {got} (input shape "
                              f"{list(expected)}); tile or pad the images to it, or export again with another size")
    return images


def load_exported(out_dir: str | pathlib.Path) -> ExportedModel:
    """The model exported into `out_dir` (`model.jaxexport`, `export.json`).

    Raises:
        ExportError: a file is missing, or `export.json` is not an export this loader reads.
    """
    out_dir = pathlib.Path(out_dir)
    model_path, metadata_path = out_dir / MODEL_FILE, out_dir / METADATA_FILE
    for path in (model_path, metadata_path):
        if not path.is_file():
            raise ExportError(f"{path} is missing: {out_dir} holds no export (make one with "
                              "`python launch.py --mode=export --workdir=W --output=DIR`)")
    metadata = json.loads(metadata_path.read_text())
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{metadata_path} has format {metadata.get('format')!r}; this loader reads {FORMAT!r}")
    exported = jax_export.deserialize(bytearray(model_path.read_bytes()))
    return ExportedModel(exported=exported, metadata=metadata, call=jax.jit(exported.call))
