"""instantiate: build the objects a config tree describes, depth first.

Children are built before their parent, so a parent receives real objects. A failure anywhere is
reported as one line with the dotted key of the failing node (`model.backbone.net`), the callable's name
and its own message; the original exception stays attached as `__cause__`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import Container, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, one_line
from .lazy import ARGS, PARTIAL, RESERVED_KEYS, TARGET, locate


def key_path(node: Any) -> str:
    """Dotted key of an omegaconf node inside its root ("model.backbone.net", list items as ".0")."""
    parts = []
    while isinstance(node, Container) and node._get_parent() is not None:
        parts.append(str(node._key()))
        node = node._get_parent()
    return ".".join(reversed(parts))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _child(cfg: Any, key: Any, path: str) -> Any:
    """cfg[key] with interpolations resolved; omegaconf errors become one-line ConfigErrors."""
    try:
        return cfg[key]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{_join(path, key)}: {type(e).__name__}: {one_line(str(e).splitlines()[0])}") from e


def _callable_name(target: Any) -> str:
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return f"{module}.{name}" if module else name


def instantiate(cfg: Any, _path: str | None = None) -> Any:
    """Build `cfg`: a node with `_target_` is called with its (built) arguments; dicts and lists without a
    target are built element-wise into plain dicts/lists; any other value is returned as is."""
    path = key_path(cfg) if _path is None else _path
    if isinstance(cfg, (ListConfig, list, tuple)):
        items = [instantiate(_child(cfg, i, path), _join(path, i)) for i in range(len(cfg))]
        return tuple(items) if isinstance(cfg, tuple) else items
    if isinstance(cfg, DictConfig) and not cfg._is_none() and dataclasses.is_dataclass(OmegaConf.get_type(cfg)):
        return OmegaConf.to_object(cfg)
    if isinstance(cfg, (DictConfig, Mapping)):
        if isinstance(cfg, DictConfig) and cfg._is_none():
            return None
        if TARGET in cfg:
            return _call(cfg, path)
        return {k: instantiate(_child(cfg, k, path), _join(path, k)) for k in cfg.keys()}
    return cfg


def _call(cfg: Any, path: str) -> Any:
    """Build the callable of a `_target_` node and call it with the node's (built) arguments."""
    target = _child(cfg, TARGET, path)
    if isinstance(target, (DictConfig, Mapping)) and TARGET in target:
        target = instantiate(target, _join(path, TARGET))  # a lazy call that returns the callable (detectron2)
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError as e:
            raise ConfigError(f"{_join(path, TARGET)}: {e}") from e
    if not callable(target):
        raise ConfigError(f"{_join(path, TARGET)}: not callable: {one_line(repr(target), 80)}")
    args = instantiate(_child(cfg, ARGS, path), _join(path, ARGS)) if ARGS in cfg else []
    kwargs = {k: instantiate(_child(cfg, k, path), _join(path, k)) for k in cfg.keys() if k not in RESERVED_KEYS}
    if PARTIAL in cfg and _child(cfg, PARTIAL, path):
        return functools.partial(target, *args, **kwargs) if args or kwargs else target
    try:
        return target(*args, **kwargs)
    except ConfigError:
        raise  # already a one-line config message (e.g. from a nested instantiate inside the callable)
    except Exception as e:
        # up to 1000 characters: an actionable message (e.g. which weights file to put where) must survive whole
        raise ConfigError(f"instantiate {path or '<root>'}: {_callable_name(target)} failed: "
                          f"{type(e).__name__}: {one_line(e, limit=1000)}") from e
