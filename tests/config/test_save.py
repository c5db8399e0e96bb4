"""LazyConfig.save / to_py: configs written out load back equal; unsavable values are reported by key."""
import dataclasses
import functools
import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lazydet.config import ConfigError, L, LazyConfig, instantiate

from .recipe_tree import standard_tree, write_tree


class Block:
    def __init__(self, dim, act=None, norm=None):
        self.dim, self.act, self.norm = dim, act, norm


def scaled(x, scale=1.0):
    return x * scale


@dataclasses.dataclass
class Shape:
    """A detectron2-ShapeSpec-like dataclass value."""
    channels: int
    stride: int = 1


def channels_of(shape, shapes=()):
    """What a builder expecting Shape objects does with them."""
    return shape.channels + sum(s.stride for s in shapes)


def rich_config():
    """Class targets, nested lazy calls, lists of calls, callables as values, interpolations, odd keys."""
    return OmegaConf.create({
        "model": L(Block)(
            dim=L(int)("${train.dim}"),
            act=torch.nn.GELU,
            norm=functools.partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        "optimizer": L(torch.optim.SGD)(params=None, lr=0.1, momentum=0.9, nesterov=True),
        "lr_multiplier": L(dict)(scheduler=L(torch.optim.lr_scheduler.StepLR)(optimizer=None, step_size=5),
                                 factor=functools.partial(scaled, scale=0.5)),
        "train": {"dim": 16, "output_dir": "./out", "log_dir": "${.output_dir}/logs", "tags": ["a", "b"],
                  "none": None, "ratio": 0.25, "inf": math.inf, "odd-key": {"bbox/AP": 1.5}},
        "stages": [L(Block)(dim=1), L(Block)(dim=2, act=L(torch.nn.ReLU)())],
    }, flags={"allow_objects": True})


def test_save_load_round_trip_equal(tmp_path):
    cfg = rich_config()
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert loaded == cfg
    assert loaded.train.log_dir == "./out/logs"  # interpolation survives save/load
    assert OmegaConf.to_container(loaded, resolve=False)["train"]["log_dir"] == "${.output_dir}/logs"
    LazyConfig.save(loaded, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "config.yaml").read_text()
    model = instantiate(loaded.model)
    assert model.dim == 16 and model.act is torch.nn.GELU
    assert isinstance(model.norm(4), torch.nn.LayerNorm) and model.norm(4).eps == 1e-6
    assert instantiate(loaded.lr_multiplier.factor)(4) == 2.0


def test_callables_assigned_without_lazycall_are_saved_as_paths(tmp_path):
    cfg = OmegaConf.create({"a": {"fn": functools.partial(scaled, scale=3.0), "cls": Block, "lst": [scaled]}},
                           flags={"allow_objects": True})
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert loaded.a.cls == {"_target_": f"{__name__}.Block", "_partial_": True}
    built = instantiate(loaded)
    assert built["a"]["fn"](2) == 6.0 and built["a"]["cls"] is Block and built["a"]["lst"][0] is scaled


def test_saved_yaml_is_plain_data(tmp_path):
    LazyConfig.save(rich_config(), tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    data = yaml.safe_load(text)  # safe loader: no python tags anywhere
    assert data["optimizer"]["_target_"] == "torch.optim.sgd.SGD"
    assert data["model"]["act"] == {"_target_": "torch.nn.modules.activation.GELU", "_partial_": True}
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temp file


def test_recipe_load_save_load_equal(tmp_path):
    tree = standard_tree(tmp_path)
    cfg = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert loaded == cfg
    assert loaded.model.output_dir == "./output/tiny"
    for key in ("optimizer", "lr_multiplier"):
        text = OmegaConf.to_yaml(loaded[key])
        assert "<" not in text and "!!" not in text


def test_tuple_assigned_after_lazycall_round_trips(tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text("from lazydet.config import L\n"
                      "model = L(dict)(scales=(2.0, 1.0))\n"
                      "model.scales = (1.0, 0.5)\n")
    cfg = LazyConfig.load(recipe)
    assert list(cfg.model.scales) == [1.0, 0.5]
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert LazyConfig.load(tmp_path / "config.yaml") == cfg


def test_to_yaml_shows_import_paths():
    cfg = rich_config()
    text = OmegaConf.to_yaml(cfg["optimizer"])
    assert text.splitlines()[0] == "_target_: torch.optim.sgd.SGD"
    sched = OmegaConf.to_yaml(cfg["lr_multiplier"]["scheduler"])
    assert "_target_: torch.optim.lr_scheduler.StepLR" in sched
    model = OmegaConf.to_yaml(cfg["model"])
    assert f"_target_: {__name__}.Block" in model and "_target_: builtins.int" in model
    assert "<function" not in model and "<class" not in model


def test_to_py_exec_round_trip(tmp_path):
    cfg = rich_config()
    source = LazyConfig.to_py(cfg)
    compile(source, "config.py", "exec")
    assert "L(SGD)(" in source and "from torch.optim.sgd import SGD" in source
    (tmp_path / "config.py").write_text(source)
    assert LazyConfig.load(tmp_path / "config.py") == cfg


def test_to_py_of_recipe_round_trip(tmp_path):
    tree = standard_tree(tmp_path)
    cfg = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    cfg.model.head._args_[1]._target_ = "torch.nn.ReLU"  # an alias path (not the defining module)
    (tmp_path / "config.py").write_text(LazyConfig.to_py(cfg))
    rebuilt = LazyConfig.load(tmp_path / "config.py")
    assert rebuilt == cfg and rebuilt.model.head._args_[1]._target_ == "torch.nn.ReLU"


def test_save_reports_every_unsavable_key(tmp_path):
    def local_act(x):
        return x

    cfg = rich_config()
    cfg.model.act = local_act
    cfg.train.fn = lambda x: x
    cfg.stages[1].weights = torch.zeros(2)
    with pytest.raises(ConfigError) as info:
        LazyConfig.save(cfg, tmp_path / "config.yaml")
    message = str(info.value)
    assert "model.act: local function" in message and "local_act" in message
    assert "train.fn: a lambda" in message
    assert "stages.1.weights: Tensor object" in message
    assert "\n" not in message
    assert not (tmp_path / "config.yaml").exists()
    with pytest.raises(ConfigError, match="train.fn: a lambda"):
        LazyConfig.to_py(cfg)
    assert len(LazyConfig.unsavable_keys(cfg)) == 3
    LazyConfig.save(cfg, tmp_path / "config.yaml", strict=False)
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert loaded.train.fn == "<unsavable function>" and loaded.train.dim == 16


def test_lazy_call_target_defined_in_recipe_is_reported(tmp_path):
    write_tree(tmp_path, {"r.py": """
        from lazydet.config import LazyCall as L
        def build(x):
            return x
        model = L(build)(x=1)
    """})
    cfg = LazyConfig.load(tmp_path / "r.py")
    assert instantiate(cfg.model) == 1
    with pytest.raises(ConfigError, match=r"model\._target_: build defined inside a recipe file"):
        LazyConfig.save(cfg, tmp_path / "config.yaml")


def test_numpy_scalars_are_written_as_numbers(tmp_path):
    import numpy as np

    cfg = OmegaConf.create({"a": np.float64(0.5), "b": np.int64(3), "c": np.arange(2)}, flags={"allow_objects": True})
    assert LazyConfig.unsavable_keys(cfg) == ["c: ndarray object array([0, 1])"]
    del cfg["c"]
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"a": 0.5, "b": 3}


def test_dataclass_values_come_back_as_themselves(tmp_path):
    """As detectron2's dump_dataclass: a dataclass value is written as a lazy call of its type."""
    cfg = OmegaConf.create({"m": L(channels_of)(shape=Shape(channels=1024), shapes=[Shape(8, stride=4)])},
                           flags={"allow_objects": True})
    assert instantiate(cfg.m) == 1028
    LazyConfig.save(cfg, tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert saved["m"]["shape"] == {"_target_": f"{__name__}.Shape", "channels": 1024, "stride": 1}
    back = LazyConfig.load(tmp_path / "c.yaml")
    assert instantiate(back.m) == 1028 and instantiate(back.m.shape) == Shape(1024)
    (tmp_path / "c.py").write_text(LazyConfig.to_py(cfg))
    assert instantiate(LazyConfig.load(tmp_path / "c.py").m) == 1028
