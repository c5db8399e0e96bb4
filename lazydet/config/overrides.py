"""Command-line overrides: "dotted.key=value" applied to a loaded config.

value is a Python literal (ast.literal_eval; also true/false/null) else the raw string. "+key=value" adds a
key that does not exist yet, "++key=value" sets it whether or not it exists. A typo'd key or a value of a
clearly wrong type is a one-line ConfigError, never a silently ignored or broken run.
"""
from __future__ import annotations

import ast
import difflib
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError, one_line
from .lazy import CONFIG_FLAGS, PARTIAL, TARGET, locate

_YAML_WORDS = {"true": True, "false": False, "null": None, "none": None}
_MISSING = object()


def parse_value(text: str) -> Any:
    """The override's value: a Python literal if it parses as one, else the string itself."""
    stripped = text.strip()
    if stripped.lower() in _YAML_WORDS:
        return _YAML_WORDS[stripped.lower()]
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply each override in order (in place) and return cfg."""
    if isinstance(overrides, str):
        overrides = [overrides]
    for override in overrides:
        _apply_one(cfg, override)
    return cfg


def _apply_one(cfg: DictConfig, override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    mode = "++" if key.startswith("++") else "+" if key.startswith("+") else ""
    key = key[len(mode):]
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {override!r}: expected dotted.key=value (or +new.key=value)")
    value = parse_value(raw)
    *parents, last = key.split(".")
    parent = _walk(cfg, parents, key, create=bool(mode))
    old = _get(parent, last)
    if old is _MISSING:
        if not mode:
            raise ConfigError(f"unknown config key {key!r}{_closest(cfg, key)}; use +{key}=... to add a new key")
        _set(parent, last, value, key)
        return
    if mode == "+":
        raise ConfigError(f"cannot add {key!r}: it already exists (value {one_line(repr(_plain(old)), 60)}); "
                          f"drop the '+' to override it")
    if isinstance(value, str) and "${" in value:
        _set_interpolation(parent, last, key, old, value, raw)
        return
    if last == TARGET or _is_callable_reference(old):
        value = _checked_target(key, old, value, raw)
    else:
        value = _checked(key, _resolved(parent, last, old), value, raw)
    _set(parent, last, value, key)


def _resolved(parent: Any, last: str, value: Any) -> Any:
    """What the node at parent[last] resolves to when it holds an interpolation (plain containers), else
    value; None (accept anything) when it does not resolve yet."""
    if not (isinstance(value, str) and "${" in value):
        return value
    try:
        resolved = parent[int(last) if isinstance(parent, ListConfig) else last]
    except Exception:
        return None
    if isinstance(resolved, (DictConfig, ListConfig)):
        return OmegaConf.to_container(resolved, resolve=True)
    return resolved


def _set_interpolation(parent: Any, last: str, key: str, old: Any, value: str, raw: str) -> None:
    """`key=${other.key}`: set it, resolve it now and type-check what it resolves to against the value it
    replaces (the interpolation itself is kept); on any error the old value is put back."""
    expected = _resolved(parent, last, old)
    _set(parent, last, value, key)
    try:
        resolved = parent[int(last) if isinstance(parent, ListConfig) else last]
    except Exception as e:
        _set(parent, last, old, key)
        raise ConfigError(f"override {key}={raw.strip()}: cannot resolve the interpolation: "
                          f"{type(e).__name__}: {one_line(str(e).splitlines()[0])}") from e
    resolved = _resolved(parent, last, value)
    try:
        _checked(key, expected, resolved, raw)
    except ConfigError as e:
        _set(parent, last, old, key)
        raise ConfigError(f"{e} (the interpolation resolves to {one_line(repr(resolved), 60)})") from e


def _is_callable_reference(old: Any) -> bool:
    """A callable passed as an argument: {_target_: path, _partial_: true} with nothing bound."""
    return isinstance(old, DictConfig) and not old._is_none() and set(old.keys()) == {TARGET, PARTIAL}


def _checked_target(key: str, old: Any, new: Any, raw: str) -> Any:
    """`x._target_=pkg.mod.Name` or `model.act=torch.nn.ReLU`: the new import path must import now."""
    if not isinstance(new, str):
        if new is None and _last_part(key) != TARGET:
            return None
        raise ConfigError(f"override {key}={raw.strip()}: expected an import path like 'package.module.Name'")
    try:
        locate(new)
    except ConfigError as e:
        raise ConfigError(f"override {key}={raw.strip()}: {e}") from e
    return new if _last_part(key) == TARGET else {TARGET: new, PARTIAL: True}


def _last_part(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _walk(cfg: Any, parts: list[str], key: str, create: bool) -> Any:
    node = cfg
    for i, part in enumerate(parts):
        child = _get(node, part)
        if child is _MISSING and create and isinstance(node, DictConfig):
            node[part] = DictConfig({}, flags=CONFIG_FLAGS)
            child = node._get_node(part)
        if child is _MISSING:
            sub = ".".join(parts[: i + 1])
            raise ConfigError(f"unknown config key {key!r} (no {sub!r}){_closest(cfg, key)}")
        if not isinstance(child, (DictConfig, ListConfig)) or child._is_none():
            sub = ".".join(parts[: i + 1])
            raise ConfigError(f"cannot set {key!r}: {sub!r} holds {one_line(repr(_plain(child)), 60)}, "
                              f"not a dict or list")
        node = child
    return node


def _get(node: Any, part: str) -> Any:
    """The child node (containers) or raw value (leaves, interpolations unresolved) at part, or _MISSING."""
    if isinstance(node, DictConfig):
        if node._is_none() or part not in node.keys():  # `in node` would hide keys whose value is ???
            return _MISSING
        child = node._get_node(part)
    elif isinstance(node, ListConfig):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            return _MISSING
        child = node._get_node(int(part))
    else:
        return _MISSING
    if child._is_missing() and not isinstance(child, (DictConfig, ListConfig)):
        return None  # a mandatory value still to be given (???) accepts any value
    return child if isinstance(child, (DictConfig, ListConfig)) else child._value()


def _set(parent: Any, last: str, value: Any, key: str) -> None:
    if isinstance(parent, ListConfig):
        if _get(parent, last) is _MISSING:
            raise ConfigError(f"cannot add {key!r}: {last!r} is not an index of the list (length {len(parent)})")
        parent[int(last)] = value
    else:
        parent[last] = value


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return None if value._is_none() else OmegaConf.to_container(value, resolve=False)
    return value


def _checked(key: str, old: Any, new: Any, raw: str) -> Any:
    """new, converted where harmless (int into float field); ConfigError when the type is clearly wrong."""
    old = _plain(old)
    if new is None or old is None or (isinstance(old, str) and old.startswith("${")):
        return new  # None is always allowed; a None / interpolated field accepts anything
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float)) and not isinstance(new, bool)
        if ok and isinstance(old, float):
            new = float(new)
    elif isinstance(old, str):
        if isinstance(new, (int, float, bool)):
            return raw.strip()  # a string field keeps what was typed ("2024" stays "2024")
        ok = True
    elif isinstance(old, list):
        ok = isinstance(new, (list, tuple))
    elif isinstance(old, dict):
        ok = isinstance(new, dict)
    else:
        ok = True  # objects (e.g. callables): any replacement is the user's call
    if not ok:
        raise ConfigError(f"override {key}={raw.strip()}: wrong type: the key holds {_a(old)} "
                          f"({one_line(repr(old), 60)}) but {one_line(repr(new), 60)} is {_a(new)}; give "
                          f"{_a(old)} (or null)")
    return new


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _closest(cfg: Any, key: str) -> str:
    keys = [k for k in _all_keys(cfg) if not key.startswith(k + ".")]  # ancestors are no suggestion
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:  # compare the last part against siblings-of-anything (e.g. 'lr' vs 'base_lr')
        last = key.rsplit(".", 1)[-1]
        close = [k for k in keys if difflib.get_close_matches(last, [k.rsplit(".", 1)[-1]], cutoff=0.75)][:3]
    return f"; closest existing keys: {', '.join(close)}" if close else ""


def _all_keys(node: Any, prefix: str = ""):
    if isinstance(node, DictConfig) and not node._is_none():
        items = [(str(k), node._get_node(k)) for k in node.keys()]
    elif isinstance(node, ListConfig) and not node._is_none():
        items = [(str(i), node._get_node(i)) for i in range(len(node))]
    else:
        return
    for name, child in items:
        full = f"{prefix}{name}"
        yield full
        if isinstance(child, (DictConfig, ListConfig)):
            yield from _all_keys(child, full + ".")
