"""Typed dataclasses to and from msgpack-ready maps, validated field by field on the way in.

Every message in ipc/messages.py is a dataclass whose annotations are its wire schema: decoding checks required fields,
field types (recursively, through lists, tuples, optionals, literals and nested dataclasses) and rejects unknown fields,
so a kernel handler only ever sees well-typed values. A field made with bounded() also carries its bounds (numeric
range, string length and charset, item count), checked here too: a handler only ever sees values within them. Floats
must be finite everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Union

from ipc.errors import ErrorCode, ProtocolError


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    lo: float | None = None,
    hi: float | None = None,
    max_len: int | None = None,
    max_items: int | None = None,
    printable: bool = False,
) -> Any:
    """A dataclass field with bounds: lo..hi for numbers, max_len characters for a string (or each string of a
    list), max_items for a list, printable characters only. factory: a default made per instance (a list)."""
    return dataclasses.field(
        default=default, default_factory=factory, metadata={"bounds": (lo, hi, max_len, max_items, printable)}
    )


def to_wire(message: Any) -> dict:
    """A dataclass as a plain map (nested dataclasses become maps; lists and tuples msgpack arrays)."""
    return {name: _plain(getattr(message, name)) for name in _fields(type(message))}


def _plain(value: Any) -> Any:
    # dataclasses.asdict deep-copies every value and costs ~20 µs per small message: too slow for the syscall path
    if dataclasses.is_dataclass(value):
        return to_wire(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def from_wire(cls: type, data: Any, path: str = "body") -> Any:
    """Build cls from a decoded map, or raise ProtocolError(BAD_REQUEST) naming the offending field."""
    if not isinstance(data, dict):
        raise _bad(path, "a map", data)
    fields = _fields(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: unknown field {str(unknown[0])[:40]!r}")
    values = {}
    for name, (annotation, required, bounds) in fields.items():
        if name in data:
            values[name] = _check(annotation, data[name], f"{path}.{name}")
            if bounds is not None and values[name] is not None:
                _check_bounds(values[name], bounds, f"{path}.{name}")
        elif required:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: missing field {name!r}")
    return cls(**values)


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, bool, tuple | None]]:
    """name → (resolved annotation, required, bounds) for a dataclass; cached because messages are decoded per
    syscall."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            f.metadata.get("bounds"),
        )
        for f in dataclasses.fields(cls)
    }


def _check_bounds(value: Any, bounds: tuple, path: str) -> None:
    lo, hi, max_len, max_items, printable = bounds
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: must be in [{lo}, {hi}], got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        if max_items is not None and len(value) > max_items:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: at most {max_items} items, got {len(value)}")
        for i, item in enumerate(value):
            _check_bounds(item, bounds, f"{path}[{i}]")
        return
    if isinstance(value, (str, bytes)):
        if max_len is not None and len(value) > max_len:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: at most {max_len} characters, got {len(value)}")
        if printable and not (isinstance(value, str) and value.isprintable()):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: only printable characters are allowed")


def _check(annotation: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _check(option, value, path)
            except ProtocolError:
                continue
        raise _bad(path, " or ".join(_describe(a) for a in args), value)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: must be one of {list(args)}, got {str(value)[:40]!r}")
    if origin is list:
        if not isinstance(value, list):
            raise _bad(path, "an array", value)
        return [_check(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:  # only homogeneous tuple[T, ...] appear in messages
        if not isinstance(value, (list, tuple)):
            raise _bad(path, "an array", value)
        return tuple(_check(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(path, "a map with string keys", value)
        return value
    if dataclasses.is_dataclass(annotation):
        return from_wire(annotation, value, path)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, float) and math.isfinite(value):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 64:  # msgpack's range
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is bytes:
        if isinstance(value, bytes):
            return value
    else:
        raise TypeError(f"schema does not support {annotation!r} at {path}")
    raise _bad(path, _describe(annotation), value)


def _describe(annotation: Any) -> str:
    if annotation is float:
        return "a finite float"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _bad(path: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"{path}: expected {expected}, got {type(value).__name__}")
