"""State-dict files: `.safetensors` (read and written here with NumPy), `.npz`, and torch's `.pth` / `.pt`.

A state dict is a flat `{name: numpy array}` in the writer's layout (torchvision's names, NCHW / OIHW).
safetensors is an 8-byte little-endian header length N, N bytes of JSON `{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`, then the raw little-endian buffer the offsets index;
parsing it here keeps the format free of dependencies and lets the reader and the writer share one module.
"""
from __future__ import annotations

import json
import pathlib
import struct
from typing import Mapping

import numpy as np

SUFFIXES = (".safetensors", ".npz", ".pth", ".pt")
# safetensors dtype names → NumPy (little-endian). BF16 has no NumPy type: its 16 bits are a float32's top half.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U8": "u1", "BOOL": "?"}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 2 ** 20  # bytes; the format's own limit, so a wrong file is not read as a huge header


class WeightsFileError(ValueError):
    """A weights file that cannot be read as a state dict; the message names the file."""


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The arrays of a state-dict file by name, as NumPy (float16/bfloat16 kept as float16/float32).

    `.pth` / `.pt` need torch (imported only then); a checkpoint dict holding the state dict under "state_dict"
    or "model" (as timm and detectron2-style trainers save them) is unwrapped.

    Raises:
        FileNotFoundError: no file at `path`.
        WeightsFileError: an unknown suffix, a malformed file, or a `.pth` without torch installed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix in (".pth", ".pt"):
        return _read_torch(path)
    raise WeightsFileError(f"weights file {str(path)!r}: unknown suffix {path.suffix!r}; "
                           f"valid: {', '.join(SUFFIXES)}")


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # only here: reading safetensors and npz files needs no torch
    except ImportError:
        raise WeightsFileError(f"weights file {str(path)!r}: reading .pth/.pt files needs torch, which is not "
                               "installed; convert it to .safetensors where torch is (`python -m "
                               "seg_jax.models.backbones.export_torchvision --help`)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsFileError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise WeightsFileError(f"weights file {str(path)!r}: entry {name!r} is a {type(tensor).__name__}, "
                                   "not a tensor")
        tensor = tensor.detach().cpu()
        out[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return out


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The arrays of a `.safetensors` file by name (BF16 widened to float32).

    Raises:
        WeightsFileError: a header that is not the format's, an unknown dtype, or offsets outside the buffer.
    """
    data = pathlib.Path(path).read_bytes()
    bad = lambda why: WeightsFileError(f"weights file {str(path)!r} is not valid safetensors: {why}")  # noqa: E731
    if len(data) < 8:
        raise bad("shorter than its 8-byte header length")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(_MAX_HEADER, len(data) - 8):
        raise bad(f"header length {header_size} bytes exceeds the file")
    try:
        header = json.loads(data[8:8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not JSON ({e})") from None
    buffer = memoryview(data)[8 + header_size:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        if dtype != "BF16" and dtype not in _DTYPES:
            raise bad(f"tensor {name!r} has dtype {dtype!r}; readable: {', '.join([*_DTYPES, 'BF16'])}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= len(buffer) or end - begin != itemsize * int(np.prod(shape)):
            raise bad(f"tensor {name!r}: offsets [{begin}, {end}) do not hold shape {shape} of {dtype} in a "
                      f"{len(buffer)}-byte buffer")
        raw = buffer[begin:end]
        if dtype == "BF16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, _DTYPES[dtype]).copy()
        out[name] = array.reshape(shape)
    return out


def write_safetensors(path: str | pathlib.Path, arrays: Mapping[str, np.ndarray], *,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes `arrays` (any of the readable dtypes but BF16) as a `.safetensors` file, in name order.

    The header is padded with spaces to a multiple of 8 bytes, as the reference writer does, so every tensor
    starts aligned.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if array.dtype not in _NAMES:
            raise ValueError(f"write_safetensors: array {name!r} has dtype {array.dtype}; writable: "
                             f"{', '.join(str(d) for d in _NAMES)}")
        raw = array.tobytes()
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)
