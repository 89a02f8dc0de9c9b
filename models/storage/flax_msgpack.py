"""Flax's msgpack checkpoint encoding, read and written without Flax or JAX.

``flax.serialization.to_bytes(params)`` packs the state dict (nested dicts with string keys) with
``msgpack.packb(tree, default=..., strict_types=True)``; each array leaf becomes msgpack extension
type 1 whose payload is itself ``msgpack.packb((shape, dtype.name, arr.tobytes("C")),
use_bin_type=True)``. Type 3 holds a numpy scalar the same way (a 0-d array); type 2 holds a Python
complex. Arrays above 2**30 bytes are split by Flax into ``{"__msgpack_chunked_array__": True,
"shape": {"0": ...}, "chunks": {"0": arr, ...}}`` dicts, which are joined back here.

The reader trusts nothing: unknown extension codes, complex numbers, dtypes other than plain
numbers, and buffers whose size does not match their shape are refused with a ``FlaxMsgpackError``
(a ``ValueError`` that names the problem; the caller adds the file name).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

EXT_NDARRAY = 1
EXT_NATIVE_COMPLEX = 2
EXT_NPSCALAR = 3
CHUNKED_MARKER = "__msgpack_chunked_array__"

# Plain numeric dtypes only: np.dtype() of an untrusted name could otherwise give object or complex.
_ALLOWED_DTYPES = frozenset(
    ["float16", "float32", "float64", "bool"]
    + [f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)]
)


class FlaxMsgpackError(ValueError):
    """The bytes are not a Flax msgpack tree this reader accepts."""


def _is_size(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _array_from_payload(data: bytes) -> np.ndarray:
    """Decode the payload of extension type 1 or 3: packed (shape, dtype name, C-order bytes)."""
    try:
        payload = msgpack.unpackb(data, raw=True)
    except Exception as exc:  # msgpack raises several types on malformed input
        raise FlaxMsgpackError(f"corrupt array payload ({exc})") from None
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        raise FlaxMsgpackError("corrupt array payload (expected a (shape, dtype, bytes) triple)")
    shape, dtype_name, buffer = payload
    if not isinstance(dtype_name, bytes) or dtype_name.decode("ascii", "replace") not in _ALLOWED_DTYPES:
        name = dtype_name.decode("ascii", "replace") if isinstance(dtype_name, bytes) else repr(dtype_name)
        raise FlaxMsgpackError(f"array dtype {name!r} is not supported (plain float, int or bool only)")
    if not isinstance(shape, (list, tuple)) or not all(_is_size(n) for n in shape):
        raise FlaxMsgpackError(f"corrupt array payload (shape {shape!r})")
    if not isinstance(buffer, bytes):
        raise FlaxMsgpackError("corrupt array payload (data is not a byte string)")
    dtype = np.dtype(dtype_name.decode("ascii"))
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise FlaxMsgpackError(
            f"array data holds {len(buffer)} bytes but shape {tuple(shape)} of {dtype.name} needs "
            f"{math.prod(shape) * dtype.itemsize} (truncated or corrupt)"
        )
    # copy(): frombuffer views the immutable bytes; callers expect an ordinary writable array.
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    if code == EXT_NDARRAY:
        return _array_from_payload(data)
    if code == EXT_NPSCALAR:
        return _array_from_payload(data).reshape(())  # kept as a 0-d array: a leaf like any other
    if code == EXT_NATIVE_COMPLEX:
        raise FlaxMsgpackError("holds a complex number (msgpack extension type 2), not a parameter array")
    raise FlaxMsgpackError(f"holds an unknown msgpack extension type {code}")


def _index_dict(d: Any, what: str) -> list[Any]:
    """Flax stores tuples as {"0": a, "1": b, ...}; return [a, b, ...]."""
    if not isinstance(d, dict) or set(d) != {str(i) for i in range(len(d))}:
        raise FlaxMsgpackError(f"corrupt chunked array ({what} is not an index dict)")
    return [d[str(i)] for i in range(len(d))]


def _unchunk(tree: Any) -> Any:
    """Join Flax's chunked-array dicts back into arrays, anywhere in the tree."""
    if not isinstance(tree, dict):
        return tree
    if CHUNKED_MARKER in tree:
        shape = _index_dict(tree.get("shape"), "shape")
        chunks = _index_dict(tree.get("chunks"), "chunks")
        if not chunks or not all(isinstance(c, np.ndarray) and c.ndim == 1 for c in chunks):
            raise FlaxMsgpackError("corrupt chunked array (chunks must be 1-d arrays)")
        flat = np.concatenate(chunks)
        if not all(_is_size(n) for n in shape) or flat.size != math.prod(shape):
            raise FlaxMsgpackError(f"corrupt chunked array ({flat.size} values for shape {shape})")
        return flat.reshape(shape)
    return {key: _unchunk(value) for key, value in tree.items()}


def unpack_tree(data: bytes) -> dict[str, Any]:
    """Decode ``flax.serialization.to_bytes`` output into nested dicts of numpy arrays."""
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False)
    except FlaxMsgpackError:
        raise
    except Exception as exc:  # ValueError, ExtraData, FormatError, StackError, TypeError, ...
        raise FlaxMsgpackError(
            f"not valid Flax msgpack, truncated or corrupt ({str(exc) or type(exc).__name__})"
        ) from None
    if not isinstance(tree, dict):
        raise FlaxMsgpackError(f"holds a msgpack {type(tree).__name__}, expected a map of parameters")
    return _unchunk(tree)


def _pack_default(obj: np.ndarray) -> msgpack.ExtType:
    """Array leaves (checked by ``_check_writable``) become extension type 1."""
    native = obj.astype(obj.dtype.newbyteorder("="), copy=False)  # the dtype name carries no byte order
    payload = (obj.shape, obj.dtype.name, native.tobytes("C"))
    return msgpack.ExtType(EXT_NDARRAY, msgpack.packb(payload, use_bin_type=True))


def _check_writable(tree: Any, where: str) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise FlaxMsgpackError(f"cannot write the non-string key {key!r} under {where or '/'}")
            _check_writable(value, f"{where}/{key}")
    elif not isinstance(tree, np.ndarray) or tree.dtype.name not in _ALLOWED_DTYPES:
        kind = f"array of {tree.dtype}" if isinstance(tree, np.ndarray) else type(tree).__name__
        raise FlaxMsgpackError(f"cannot write a {kind} leaf at {where} (numpy arrays of plain numbers only)")


def pack_tree(tree: dict[str, Any]) -> bytes:
    """Encode nested dicts of numpy arrays exactly as ``flax.serialization.to_bytes`` does.

    (Flax would split arrays above 2**30 bytes into chunks; this encoder's users never have one.)
    """
    _check_writable(tree, "")
    return msgpack.packb(tree, default=_pack_default, strict_types=True)


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": x}} → {"a/b": x}; leaves are whatever is not a dict."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_tree(value, name + "/"))
        else:
            flat[name] = value
    return flat
