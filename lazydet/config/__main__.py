"""Print a recipe as its config: `python -m lazydet.config RECIPE [key=value ...] [--key K] [--py]`.

For checking what a recipe (plus overrides) really contains before launching a run.
"""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from .errors import ConfigError
from .lazy_config import LazyConfig


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); print the config; return the exit code (2 on a
    config error, whose one-line message goes to stderr)."""
    parser = argparse.ArgumentParser(prog="python -m lazydet.config", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe .py or saved config .yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value (+new.key=value adds a key)")
    parser.add_argument("--key", help="print only this dotted key (e.g. optimizer, lr_multiplier.scheduler)")
    parser.add_argument("--py", action="store_true", help="print re-runnable Python instead of YAML")
    args = parser.parse_args(argv)
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.recipe), args.overrides)
        node = cfg if args.key is None else OmegaConf.select(cfg, args.key, default=KeyError)
        if node is KeyError:
            raise ConfigError(f"--key {args.key}: no such key in {args.recipe}")
        if args.py:
            text = LazyConfig.to_py(node if args.key is None else {args.key.replace(".", "_"): node})
        else:
            text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else f"{node}\n"
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
