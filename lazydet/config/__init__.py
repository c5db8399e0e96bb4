"""lazydet.config: recipes as lazy call trees (detectron2 LazyConfig API). See docs/config.md."""
from .errors import ConfigError
from .instantiate import instantiate
from .lazy import LazyCall, locate
from .lazy_config import LazyConfig, configs_root, get_config

L = LazyCall

__all__ = ["ConfigError", "L", "LazyCall", "LazyConfig", "configs_root", "get_config", "instantiate", "locate"]
