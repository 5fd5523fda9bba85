"""Encoding of state values: msgpack, with pydantic models as a tagged extension.

A pydantic model is stored as msgpack ext type 1 holding
``[ "module:QualName", model.model_dump(mode="json") ]``.  Reading it back
with ``type=Model`` validates into that class; reading it without a type
finds the class by its path (classes already seen by this process first).
"""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError

from .exceptions import StateDecodeError

__all__ = ["decode_value", "encode_value", "pack", "unpack"]

MODEL_EXT = 1
_seen: dict[str, type[BaseModel]] = {}


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        cls = type(obj)
        path = _path(cls)
        _seen.setdefault(path, cls)
        # Not pack(): this runs inside the thread's Packer, which is not re-entrant.
        payload = msgpack.packb([path, obj.model_dump(mode="json")], use_bin_type=True, default=_default)
        return msgpack.ExtType(MODEL_EXT, payload)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot store a value of type {type(obj).__name__}")


def _find_class(path: str) -> type[BaseModel]:
    cls = _seen.get(path)
    if cls is None:
        module, _, qualname = path.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise StateDecodeError(
                f"stored model {path} cannot be imported here; read it with type=...", model=path
            ) from exc
        cls = obj
        _seen[path] = cls
    return cls


def _ext_hook(code: int, data: bytes) -> Any:
    if code != MODEL_EXT:
        raise StateDecodeError(f"unknown msgpack extension type {code} in stored value")
    path, dumped = unpack(data)
    return _find_class(path).model_validate(dumped)


_local = threading.local()


def pack(value: Any) -> bytes:
    # One Packer per thread: packb() would build a new one on every call.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, default=_default)
    try:
        return packer.pack(value)
    except BaseException:
        packer.reset()
        raise


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_ext_hook)


def encode_value(value: Any) -> bytes:
    try:
        return pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateDecodeError(f"cannot encode value for storage: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def _raw_ext_hook(code: int, data: bytes) -> Any:
    # For typed reads: keep a model's dumped fields and let the target type validate them.
    if code != MODEL_EXT:
        raise StateDecodeError(f"unknown msgpack extension type {code} in stored value")
    return unpack_raw(data)[1]


def unpack_raw(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_raw_ext_hook)


def decode_value(raw: bytes, type: Any = None) -> Any:
    """Decode a stored value; with ``type``, validate into it (models, lists of models, ...)."""
    try:
        if type is None:
            return unpack(raw)
        return _adapter(type).validate_python(unpack_raw(raw))
    except StateDecodeError:
        raise
    except ValidationError as exc:
        raise StateDecodeError(f"stored value does not validate as {type!r}: {exc.errors()[0]['msg']}") from exc
    except Exception as exc:  # msgpack's own errors on a damaged value
        raise StateDecodeError(f"stored value cannot be decoded: {exc}") from exc
