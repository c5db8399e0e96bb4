"""A circular import between recipe files is one ConfigError line naming the cycle (before: RecursionError after
~1000 nested executions), whichever way the files load each other; shared files loaded twice are no cycle."""
import os

import pytest

from lazydet.config import ConfigError, LazyConfig
from tests.folder_state import assert_unchanged, folder_state


def _write(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _cycle_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(str(path))
    message = str(info.value)
    assert "\n" not in message and "RecursionError" not in message
    return message


def test_relative_imports(tmp_path):
    _write(tmp_path, {"a.py": "from .b import model\ntrain = dict(x=1)\n",
                      "b.py": "# the shared model\nfrom .a import train\nmodel = dict(y=2)\n"})
    assert _cycle_error(tmp_path / "a.py") == (
        f"circular import between recipe files in {tmp_path}: a.py -> b.py -> a.py (b.py:2 imports a.py); move "
        "what both need into a third file")


def test_get_config_and_load_rel_across_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYDET_CONFIGS", str(tmp_path / "configs"))
    _write(tmp_path, {
        "projects/p/recipe.py": "from lazydet.config import get_config\ntrain = get_config('common/train.py').train\n",
        "configs/common/train.py": "from lazydet.config import LazyConfig\n\n"
                                   "model = LazyConfig.load_rel('models/m.py', 'model')\ntrain = dict(max_iter=1)\n",
        "configs/common/models/m.py": "from ...common import train\nmodel = dict(z=3)\n",
    })
    message = _cycle_error(tmp_path / "projects" / "p" / "recipe.py")
    assert message.startswith(f"circular import between recipe files in {tmp_path / 'configs' / 'common'}: train.py "
                              "-> models/m.py -> train.py (models/m.py:1 imports train.py)"), message


def test_a_file_importing_itself(tmp_path):
    _write(tmp_path, {"a.py": "from . import a\n"})
    assert "in {}: a.py -> a.py (a.py:1 imports a.py)".format(tmp_path) in _cycle_error(tmp_path / "a.py")


def test_shared_files_loaded_twice_are_not_a_cycle(tmp_path):
    _write(tmp_path, {"top.py": "from .left import l\nfrom .right import r\n",
                      "left.py": "from .base import base\nl = dict(base)\n",
                      "right.py": "from .base import base\nr = dict(base)\n",
                      "base.py": "base = dict(v=1)\n"})
    cfg = LazyConfig.load(str(tmp_path / "top.py"))
    assert cfg.l.v == 1 and cfg.r.v == 1
    _write(tmp_path, {"top.py": "from .bad import x\n", "bad.py": "x = 1 / 0\n"})
    with pytest.raises(ConfigError, match="ZeroDivisionError"):  # a failed load leaves no file marked as executing
        LazyConfig.load(str(tmp_path / "top.py"))
    assert LazyConfig.load(str(tmp_path / "left.py")).l.v == 1


def test_train_net_prints_the_cycle_and_leaves_the_output_folder_alone(tmp_path):
    from scripts import train_net

    _write(tmp_path, {"a.py": "from .b import model\ntrain = dict(output_dir='unused')\n",
                      "b.py": "from .a import train\nmodel = dict(y=2)\n", "run/config.yaml": "old: 1\n"})
    before = folder_state(str(tmp_path))
    with pytest.raises(SystemExit) as info:
        train_net.cli(["--config-file", str(tmp_path / "a.py"), f"train.output_dir={tmp_path / 'run'}"])
    assert str(info.value.code) == (f"error: circular import between recipe files in {tmp_path}: a.py -> b.py -> a.py "
                                    "(b.py:1 imports a.py); move what both need into a third file")
    assert_unchanged(str(tmp_path), before, allow_new=("__pycache__",))
    assert os.listdir(tmp_path / "run") == ["config.yaml"]
