"""Read `.safetensors` files into NumPy without `torch` (or the
`safetensors` package), tensor by tensor, bfloat16 included.

The format: an 8-byte little-endian header length, a JSON header mapping
each name to `{"dtype", "shape", "data_offsets"}`, then the raw
little-endian bytes.
"""

import collections.abc
import json
import struct

import numpy as np

_NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_header(path):
    """The JSON header of a safetensors file (without `__metadata__`)
    and the offset where its data begins."""
    with open(path, "rb") as f:
        size_bytes = f.read(8)
        if len(size_bytes) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short).")
        (size,) = struct.unpack("<Q", size_bytes)
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


class SafetensorsReader(collections.abc.Mapping):
    """A read-only mapping from tensor names to NumPy arrays over one or
    more safetensors files; each tensor is read when looked up. bfloat16
    tensors come back as float32 (exactly: bfloat16 is float32's top 16
    bits); the other dtypes as themselves.

    Args:
        paths: the files (e.g. the shards of a sharded checkpoint).

    Example:

    >>> import numpy as np, tempfile, os
    >>> from safetensors.numpy import save_file
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file({"w": np.arange(3, dtype="float32")}, path)
    >>> SafetensorsReader([path])["w"].tolist()
    [0.0, 1.0, 2.0]

    References:
        - The safetensors format, github.com/huggingface/safetensors.
    """

    def __init__(self, paths):
        self._where = {}
        for path in paths:
            header, start = read_header(path)
            for name, info in header.items():
                self._where[name] = (path, start, info)

    def __getitem__(self, name):
        path, start, info = self._where[name]
        begin, end = info["data_offsets"]
        dtype, shape = info["dtype"], tuple(info["shape"])
        with open(path, "rb") as f:
            f.seek(start + begin)
            raw = np.frombuffer(f.read(end - begin), np.uint8)
        if dtype == "BF16":
            bits = raw.view("<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(shape)
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(
                f"Tensor {name!r} in {path} has dtype {dtype}, which this "
                f"reader does not support ({sorted(_NUMPY_DTYPES)} and BF16)."
            )
        return raw.view(_NUMPY_DTYPES[dtype]).reshape(shape)

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)

    def dtypes(self):
        """The set of stored dtypes (e.g. `{"BF16"}`)."""
        return {info["dtype"] for _, _, info in self._where.values()}
