"""Executing recipe files: Python recipes with relative imports of other recipe files, and YAML configs.

configs/ and projects/ are folders, not Python packages, so a recipe's relative imports
(`from ..common.train import train`, `from .models.dino_vit import model`) are resolved here against the
importing file's folder. Every import executes the imported file afresh, so a recipe that edits what it
imported never changes what another recipe sees.
"""
from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import sys
import threading
import traceback
import types
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError, one_line
from .lazy import CONFIG_FLAGS, TARGET, encode_target, encode_value

RECIPE_MODULE_PREFIX = "lazydet_recipe"  # __name__ of executed recipes; never importable
PY_SUFFIXES = (".py",)
YAML_SUFFIXES = (".yaml", ".yml")
_builtin_import = builtins.__import__
_executing = threading.local()  # .files: the recipe files being executed in this thread, outermost first


def load_config_file(path: str | Path) -> DictConfig:
    """Load a .py recipe or a .yaml config into a DictConfig (flag allow_objects): a recipe's public
    top-level dict and list values (as detectron2 keeps them; other names are left out)."""
    return load_config_and_names(path)[0]


def load_config_and_names(path: str | Path) -> tuple[DictConfig, dict[str, Any]]:
    """(the config as load_config_file gives it, every top-level name the file defined -> its value).

    In the second, names that made it into the config map to the config's nodes (so interpolations between
    top-level keys still resolve); anything else (a string, a number, a module...) maps to its plain value,
    so `LazyConfig.load(path, keys=...)` finds what detectron2's finds."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist either)"
        raise ConfigError(f"config file not found: {path}{hint}")
    if path.suffix in YAML_SUFFIXES:
        cfg = _load_yaml(path)
        return cfg, {name: cfg[name] for name in cfg.keys()}
    if path.suffix not in PY_SUFFIXES:
        raise ConfigError(f"{path}: unknown config file type {path.suffix!r} (expected .py or .yaml)")
    namespace = _exec_recipe(path)
    namespace.pop("__builtins__", None)
    content = {name: value for name, value in namespace.items()
               if not name.startswith("_") and isinstance(value, (dict, list, DictConfig, ListConfig))}
    cfg = OmegaConf.create(content, flags=CONFIG_FLAGS)
    encode_tree(cfg)
    return cfg, {name: cfg[name] if name in content else value for name, value in namespace.items()}


def encode_tree(cfg: Any) -> None:
    """In place: values assigned directly into a config (not through L) are encoded as L encodes its
    arguments: callables become lazy nodes / paths, tuples become lists (as YAML stores them)."""
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg)) if isinstance(cfg, ListConfig) else ()
    for key in list(keys):
        node = cfg._get_node(key)
        if type(node).__name__ == "TupleConfig":  # omegaconf >= 2.4 keeps tuples; YAML gives lists
            items = list(OmegaConf.to_container(node, resolve=False))
            if isinstance(cfg, DictConfig):  # a tuple node keeps its type on assignment: replace the node
                cfg.pop(key)
            cfg[key] = items
            node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)):
            encode_tree(node)
            continue
        value = node._value()
        if callable(value):
            encoded = encode_target(value) if key == TARGET else encode_value(value)
            if encoded is not value:
                cfg[key] = encoded


_PYTHON_TAG = re.compile(r"tag:yaml.org,2002:(python/(\w+)(?::([\w.]*))?)")
_TAG_ADVICE = {
    "name": "write the import path as a plain string ({name!r}; lazydet configs store callables that way)",
    "object": "write it as a mapping with `_target_: {name}` and its fields, as LazyConfig.save stores dataclasses",
    "tuple": "write it as a plain YAML list",
}


def _load_yaml(path: Path) -> DictConfig:
    """A YAML config as a DictConfig; YAML errors become one line with the file, line and what to do."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:
        tag = _PYTHON_TAG.search(str(getattr(e, "problem", "")))
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        if tag:  # detectron2 writes Python objects with yaml tags (loaded there by yaml.unsafe_load)
            kind, name = tag.group(2), tag.group(3) or ""
            advice = _TAG_ADVICE.get(kind, "replace it by plain data").format(name=name)
            raise ConfigError(f"{where}: YAML tag !!{tag.group(1)} is not supported (lazydet never executes "
                              f"code from a YAML file); load the run's .py recipe instead, or {advice}") from e
        raise ConfigError(f"{where}: cannot parse YAML: {type(e).__name__}: {one_line(e)}") from e
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a config file must hold a mapping at top level, found a list")
    cfg._set_flag("allow_objects", True)
    return cfg


def _exec_recipe(path: Path) -> dict[str, Any]:
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {one_line(e)}") from e
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        text = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise _located(f"{path}:{e.lineno}: syntax error in recipe: {e.msg}{text}") from e
    with _entered(path):
        return _exec_code(path, code)


@contextlib.contextmanager
def _entered(path: Path):
    """While `path` executes it is on this thread's stack of executing recipes; finding it there already means
    a circular import (a.py imports b.py which imports a.py, which would recurse until RecursionError)."""
    files = _executing.__dict__.setdefault("files", [])
    real = [os.path.realpath(f) for f in files]
    if os.path.realpath(path) in real:
        raise _located(_cycle_message(files[real.index(os.path.realpath(path)):] + [path]))
    files.append(path)
    try:
        yield
    finally:
        files.pop()


def _cycle_message(cycle: list[Path]) -> str:
    """'circular import between recipe files in <folder>: a.py -> b.py -> a.py (b.py:3 imports a.py)'."""
    folder = Path(os.path.commonpath([str(f.parent) for f in cycle]))
    names = [str(f.relative_to(folder)) for f in cycle]
    return (f"circular import between recipe files in {folder}: {' -> '.join(names)} ({names[-2]}:"
            f"{_line_executing(cycle[-2])} imports {names[-1]}); move what both need into a third file")


def _line_executing(path: Path) -> int | str:
    """The line of `path` that is executing now (the innermost frame of that file), or '?'."""
    frame = sys._getframe()
    while frame is not None and frame.f_code.co_filename != str(path):
        frame = frame.f_back
    return frame.f_lineno if frame is not None else "?"


def _exec_code(path: Path, code: types.CodeType) -> dict[str, Any]:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    namespace: dict[str, Any] = {
        "__file__": str(path),
        "__name__": f"{RECIPE_MODULE_PREFIX}.{path.stem}_{digest}",
        "__builtins__": _RECIPE_BUILTINS,
    }
    try:
        exec(code, namespace)
    except Exception as e:
        if getattr(e, "names_recipe_line", False):
            raise  # raised by a recipe this one imports: already names that file and line
        line = _last_line_in(e.__traceback__, path)
        what = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {one_line(e)}"
        raise _located(f"{path}:{line}: {what}") from e
    return namespace


def _located(message: str) -> ConfigError:
    """A ConfigError that already names its recipe file and line (importing recipes pass it on as is)."""
    error = ConfigError(message)
    error.names_recipe_line = True
    return error


def _last_line_in(tb: types.TracebackType | None, path: Path) -> int | str:
    line: int | str = "?"
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == str(path):
            line = lineno
    return line


def _caller_line() -> int | str:
    frame = sys._getframe(2)  # 0: here, 1: _recipe_import, 2: the recipe's import statement
    return frame.f_lineno if frame is not None else "?"


def _recipe_import(name, globals=None, locals=None, fromlist=(), level=0):
    """__import__ for recipes: relative imports load recipe files; everything else is a normal import."""
    importer = (globals or {}).get("__file__")
    if level == 0 or not importer or not str((globals or {}).get("__name__", "")).startswith(RECIPE_MODULE_PREFIX):
        return _builtin_import(name, globals, locals, fromlist, level)
    base = Path(importer).parent
    for _ in range(level - 1):
        base = base.parent
    target = base.joinpath(*name.split(".")) if name else base
    dotted = "." * level + name
    module = _load_recipe_module(target)
    if module is None:
        raise _located(f"{importer}:{_caller_line()}: relative import {dotted!r} found no recipe "
                                  f"{target}.py, {target}.yaml or folder {target}")
    for item in fromlist or ():
        if item != "*" and not hasattr(module, item):
            raise _located(f"{importer}:{_caller_line()}: cannot import name {item!r} from "
                                      f"{dotted!r} ({getattr(module, '__file__', target)})")
    return module


def _load_recipe_module(target: Path) -> types.ModuleType | None:
    """The recipe file target.py / target.yaml as a module, or the folder target as a package."""
    for suffix in PY_SUFFIXES + YAML_SUFFIXES:
        file = target.with_name(target.name + suffix)
        if file.is_file():
            module = types.ModuleType(f"{RECIPE_MODULE_PREFIX}.{target.name}")
            module.__file__ = str(file)
            if suffix in PY_SUFFIXES:
                namespace = _exec_recipe(file)
                namespace.pop("__builtins__", None)
                module.__dict__.update({k: _as_config(v) for k, v in namespace.items()})
            else:
                module.__dict__.update(_load_yaml(file))  # top-level keys as attributes (DictConfig nodes)
            return module
    return _RecipeFolder(target) if target.is_dir() else None


def _as_config(value: Any) -> Any:
    return DictConfig(value, flags=CONFIG_FLAGS) if isinstance(value, dict) else value


class _RecipeFolder(types.ModuleType):
    """A folder of recipes seen as a package: `from . import models`; attributes load files on demand."""

    def __init__(self, folder: Path):
        super().__init__(f"{RECIPE_MODULE_PREFIX}.{folder.name}")
        self.__file__ = str(folder)
        self.__path__ = [str(folder)]

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        module = _load_recipe_module(Path(self.__file__) / item)
        if module is None:
            raise AttributeError(item)
        setattr(self, item, module)
        return module


_RECIPE_BUILTINS = dict(builtins.__dict__, __import__=_recipe_import)
