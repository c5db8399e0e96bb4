"""LazyCall (L): record a call as config data instead of making it.

`L(fn)(**kwargs)` returns an omegaconf DictConfig `{_target_: fn, **kwargs}` that `instantiate` turns into
`fn(**kwargs)` later, after recipes and overrides have edited it. Importable callables are stored as their
import path string ("torch.optim.adamw.AdamW") so a config stays plain data: it prints as readable YAML,
saves and loads back equal. Callables that cannot be imported by name (lambdas, local functions) are kept
as objects; they work in memory and are reported by `LazyConfig.save`.
"""
from __future__ import annotations

import functools
import importlib
import types
from typing import Any, Callable

from omegaconf import DictConfig

from .errors import ConfigError, one_line

TARGET = "_target_"  # the callable (or its import path)
ARGS = "_args_"  # optional positional arguments
PARTIAL = "_partial_"  # true: build functools.partial(target, ...) instead of calling it
RESERVED_KEYS = (TARGET, ARGS, PARTIAL)
CONFIG_FLAGS = {"allow_objects": True}

_METHODS = (types.MethodType, types.BuiltinMethodType)
_NAMED_CALLABLES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def locate(path: str) -> Any:
    """Import "pkg.module.Name[.attr...]" and return the object. Raises a one-line ConfigError."""
    parts = path.split(".") if isinstance(path, str) else []
    if not parts or not all(p.isidentifier() for p in parts):
        raise ConfigError(f"cannot import {path!r}: not a dotted import path like 'package.module.Name'")
    obj, found = None, 0
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj, found = importlib.import_module(name), i
            break
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise ConfigError(f"cannot import {path!r}: importing {name} failed: {one_line(e)}") from e
        except Exception as e:  # a module that exists but fails on import
            raise ConfigError(f"cannot import {path!r}: importing {name} failed: {type(e).__name__}: "
                              f"{one_line(e)}") from e
    if obj is None:
        raise ConfigError(f"cannot import {path!r}: no module named {parts[0]!r}")
    for i in range(found, len(parts)):
        try:
            obj = getattr(obj, parts[i])
        except AttributeError:
            owner = ".".join(parts[:i])
            raise ConfigError(f"cannot import {path!r}: {owner} has no attribute {parts[i]!r}") from None
    return obj


def import_path(obj: Any) -> str | None:
    """The "module.qualname" path that imports back to this very object, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module is None and isinstance(getattr(obj, "__self__", None), type):
        module = obj.__self__.__module__  # C class methods (dict.fromkeys) have no __module__ of their own
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" or "<" in qualname:
        return None  # lambdas and local functions have "<lambda>" / "<locals>" in their qualname
    path = f"{module}.{qualname}"
    try:
        found = locate(path)
    except ConfigError:
        return None
    # bound class methods (Backbone.from_config, dict.fromkeys) are new objects on every access: compare them
    same = found is obj or (isinstance(obj, _METHODS) and isinstance(found, _METHODS) and found == obj)
    return path if same else None


def encode_value(value: Any) -> Any:
    """Turn callables inside config values into lazy nodes (data), recursively in plain containers.

    A named function or class becomes `{_target_: path, _partial_: true}` (instantiates back to itself);
    a functools.partial becomes the same node with its bound arguments. Anything else is returned as is.
    """
    if isinstance(value, functools.partial):
        path = import_path(value.func)
        if path is None:
            return value
        node: dict[str, Any] = {TARGET: path, PARTIAL: True}
        if value.args:
            node[ARGS] = [encode_value(a) for a in value.args]
        node.update({k: encode_value(v) for k, v in value.keywords.items()})
        return node
    if isinstance(value, _NAMED_CALLABLES):
        path = import_path(value)
        return value if path is None else {TARGET: path, PARTIAL: True}
    if isinstance(value, dict):
        return {k: encode_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    return value


def encode_target(target: Any) -> Any:
    """The value stored under `_target_`: the import path when there is one, else the callable itself."""
    if isinstance(target, str):
        return target
    return import_path(target) or target


class LazyCall:
    """`LazyCall(fn)(*args, **kwargs)` -> DictConfig describing the call `fn(*args, **kwargs)`.

    `fn` may be a callable or an import path string. Nothing is called until `instantiate`.
    """

    def __init__(self, target: Callable | str):
        if isinstance(target, str):
            locate(target)  # fail at recipe load time, not at instantiate time
        elif not callable(target):
            raise ConfigError(f"LazyCall expects a callable or an import path string, got "
                              f"{type(target).__name__}: {one_line(repr(target), 80)}")
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        if TARGET in kwargs or ARGS in kwargs:
            raise ConfigError(f"LazyCall({self._target!r})(...): keyword arguments may not be named "
                              f"{TARGET} or {ARGS}")
        node: dict[str, Any] = {TARGET: encode_target(self._target)}
        if args:
            node[ARGS] = [encode_value(a) for a in args]
        node.update({k: encode_value(v) for k, v in kwargs.items()})
        return DictConfig(content=node, flags=CONFIG_FLAGS)

    def __repr__(self) -> str:
        return f"LazyCall({encode_target(self._target)!r})"


L = LazyCall
