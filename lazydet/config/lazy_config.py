"""LazyConfig: load / save / override / print recipes; get_config for the shared files under configs/."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from .errors import ConfigError
from .loader import load_config_and_names, load_config_file
from .overrides import apply_overrides
from .serialize import to_plain, to_python_source

CONFIGS_ENV = "LAZYDET_CONFIGS"


class LazyConfig:
    """The detectron2-style entry points for configs (all static)."""

    @staticmethod
    def load(path: str | os.PathLike, keys: str | Sequence[str] | None = None) -> Any:
        """Load a .py recipe or a .yaml config as a DictConfig (its top-level dict and list values).

        keys: a top-level name (returns its value) or a sequence of names (returns a tuple of values). As in
        detectron2, a name may hold anything the recipe defined, e.g. a plain string or number."""
        if keys is None:
            return load_config_file(path)
        _, names = load_config_and_names(path)
        wanted = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in wanted if k not in names]
        if missing:
            defined = ", ".join(str(k) for k in names if not str(k).startswith("_")) or "nothing"
            raise ConfigError(f"{path}: no top-level key(s) {', '.join(map(repr, missing))}; "
                              f"the file defines {defined}")
        return names[keys] if isinstance(keys, str) else tuple(names[k] for k in wanted)

    @staticmethod
    def load_rel(path: str, keys: str | Sequence[str] | None = None) -> Any:
        """load() with `path` relative to the calling recipe file (for recipes loading .yaml neighbours)."""
        caller = sys._getframe(1).f_globals.get("__file__")
        base = Path(caller).parent if caller else Path.cwd()
        return LazyConfig.load(base / path, keys)

    @staticmethod
    def save(cfg: Any, path: str | os.PathLike, strict: bool = True) -> None:
        """Write cfg as YAML that LazyConfig.load reads back to an equal config.

        Callables become import paths. Unsavable values (lambdas, local functions, arbitrary objects) raise a
        ConfigError naming their keys; with strict=False they are written as "<unsavable ...>" strings instead
        (use `LazyConfig.unsavable_keys(cfg)` to warn about them)."""
        from omegaconf import OmegaConf

        from lazydet.checkpoint.atomic import atomic_open  # here: loading configs needs no torch

        text = OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg, strict=strict)))
        with atomic_open(os.fspath(path), "wb") as f:  # readers never see a half-written file
            f.write(text.encode("utf-8"))

    @staticmethod
    def unsavable_keys(cfg: Any) -> list[str]:
        """'key: reason' for every value that save/to_py cannot write (empty when all is savable)."""
        from .serialize import unsavable_keys

        return unsavable_keys(cfg)

    @staticmethod
    def to_py(cfg: Any) -> str:
        """Python recipe source (L(...) calls, dicts, imports) that loads back to an equal config."""
        return to_python_source(cfg)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply "dotted.key=value" overrides in place (see lazydet.config.overrides); returns cfg."""
        return apply_overrides(cfg, overrides)


def configs_root() -> Path:
    """The shared recipe folder: $LAZYDET_CONFIGS, else configs/ next to the lazydet package (else ./configs)."""
    env = os.environ.get(CONFIGS_ENV)
    if env:
        return Path(env).expanduser().absolute()
    beside_package = Path(__file__).resolve().parents[2] / "configs"
    if not beside_package.is_dir() and (Path.cwd() / "configs").is_dir():
        return Path.cwd() / "configs"  # lazydet installed as a wheel: use the checkout we run from
    return beside_package


def get_config(config_path: str) -> DictConfig:
    """Load a shared recipe by its path under configs/, e.g. get_config("common/train.py").train."""
    root = configs_root()
    path = root / config_path
    if not path.is_file():
        source = f"${CONFIGS_ENV}" if os.environ.get(CONFIGS_ENV) else f"the repo (set ${CONFIGS_ENV} to change)"
        raise ConfigError(f"get_config({config_path!r}): no file {path} under configs folder {root} from {source}")
    return LazyConfig.load(path)
