"""Every recipe in the repo loads, and writes out (YAML and Python) to an equal config."""
from pathlib import Path

import pytest

from lazydet.config import LazyConfig

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for pattern in ("configs/**/*.py", "projects/*/configs/**/*.py")
                 for p in REPO.glob(pattern) if p.name != "__init__.py")


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(REPO)) for p in RECIPES])
def test_recipe_loads_and_round_trips(recipe, tmp_path):
    cfg = LazyConfig.load(recipe)
    assert len(cfg) > 0, f"{recipe} defines no top-level dict"
    assert LazyConfig.unsavable_keys(cfg) == []
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert LazyConfig.load(tmp_path / "config.yaml") == cfg
    (tmp_path / "config.py").write_text(LazyConfig.to_py(cfg))
    assert LazyConfig.load(tmp_path / "config.py") == cfg
