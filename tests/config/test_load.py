"""LazyConfig.load: executing recipes, relative imports between recipe files, get_config, load errors."""
import pytest
from omegaconf import DictConfig, OmegaConf

from lazydet.config import ConfigError, LazyConfig, configs_root, get_config, instantiate

from .recipe_tree import standard_tree, write_tree


@pytest.fixture()
def tree(tmp_path):
    return standard_tree(tmp_path)


def test_load_recipe_with_parent_relative_imports(tree):
    cfg = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    assert isinstance(cfg, DictConfig) and cfg._get_flag("allow_objects")
    assert sorted(cfg.keys()) == ["lr_multiplier", "model", "optimizer", "train"]
    assert cfg.train.max_iter == 300 and cfg.train.eval_period == 5000  # edited and inherited values
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer._target_ == "torch.optim.adamw.AdamW"
    assert cfg.model.num_classes == 3
    assert cfg.model.output_dir == "./output/tiny"  # interpolation into another top-level key
    assert cfg.lr_multiplier.scheduler.milestones == [11]


def test_parent_relative_import_of_common(tree):
    write_tree(tree, {"configs/COCO/r.py": """
        from ..common.train import train
        from ..common.optim import AdamW as optimizer
        train.max_iter = 12
    """})
    cfg = LazyConfig.load(tree / "configs/COCO/r.py")
    assert cfg.train.max_iter == 12 and cfg.train.amp.dtype == "bf16" and cfg.optimizer.weight_decay == 0.1


def test_star_import(tmp_path):
    write_tree(tmp_path, {"base.py": "a = dict(x=1)\nb = [1]\n", "top.py": "from .base import *\na.x = 2\n"})
    cfg = LazyConfig.load(tmp_path / "top.py")
    assert cfg.a.x == 2 and list(cfg.b) == [1]


def test_imports_run_each_file_afresh(tree):
    """A recipe that edits what it imported must not change what other recipes (or later loads) see."""
    cfg = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    train = LazyConfig.load(tree / "configs/common/train.py", keys="train")
    assert cfg.train.max_iter == 300 and train.max_iter == 90000
    again = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    assert again == cfg


def test_same_folder_package_and_yaml_imports(tmp_path):
    write_tree(tmp_path, {
        "exp/parts/a.py": "a = dict(x=1)\n",
        "exp/parts/b.py": "from .a import a\nb = dict(y=a.x + 1)\n",
        "exp/main.py": """
            from . import parts
            from .parts.b import b
            from .saved import train
            combined = dict(x=parts.a.a.x, y=b.y, iters=train.max_iter)
            from lazydet.config import LazyConfig
            loaded = LazyConfig.load_rel("saved.yaml", keys="train")
        """,
        "exp/saved.yaml": "train:\n  max_iter: 7\n  out: ${.max_iter}\n",
    })
    cfg = LazyConfig.load(tmp_path / "exp/main.py")
    assert cfg.combined == {"x": 1, "y": 2, "iters": 7}
    assert cfg.loaded.max_iter == 7 and cfg.loaded.out == 7


def test_load_keys(tree):
    path = tree / "projects/demo/configs/recipe.py"
    model = LazyConfig.load(path, keys="model")
    assert model.num_classes == 3
    train, optimizer = LazyConfig.load(path, keys=("train", "optimizer"))
    assert train.max_iter == 300 and optimizer.lr == 2e-4


def test_only_dicts_and_lists_become_config_keys(tmp_path):
    write_tree(tmp_path, {"r.py": """
        import math
        helper_number = 3
        _private = dict(a=1)
        def helper():
            return 1
        kept = dict(v=helper_number)
        kept_list = [1, 2]
    """})
    cfg = LazyConfig.load(tmp_path / "r.py")
    assert sorted(cfg.keys()) == ["kept", "kept_list"]


def test_load_keys_finds_plain_values_as_detectron2_does(tmp_path):
    """keys= looks among everything the file defined, not only the dicts and lists load() keeps."""
    write_tree(tmp_path, {"r.py": """
        dataset_name = "coco_2017_val"
        num_iters = 5
        model = dict(d="${dataset}")
        dataset = dict(name=dataset_name)
    """, "sub/s.py": """
        from lazydet.config import LazyConfig
        name_again = LazyConfig.load_rel("../r.py", keys="dataset_name")
    """})
    assert LazyConfig.load(tmp_path / "r.py", keys="dataset_name") == "coco_2017_val"
    iters, model = LazyConfig.load(tmp_path / "r.py", keys=("num_iters", "model"))
    assert iters == 5 and isinstance(model, DictConfig) and model.d.name == "coco_2017_val"
    assert LazyConfig.load(tmp_path / "sub/s.py", keys="name_again") == "coco_2017_val"
    assert sorted(LazyConfig.load(tmp_path / "r.py").keys()) == ["dataset", "model"]  # load() keeps configs


@pytest.mark.parametrize("text,line,tag,advice", [
    ("model:\n  _target_: !!python/name:detectron2.modeling.GeneralizedRCNN ''\n", 2,
     "!!python/name:detectron2.modeling.GeneralizedRCNN", "'detectron2.modeling.GeneralizedRCNN'"),
    ("a: 1\nmodel:\n  shape: !!python/object:detectron2.layers.ShapeSpec\n    channels: 256\n", 3,
     "!!python/object:detectron2.layers.ShapeSpec", "`_target_: detectron2.layers.ShapeSpec`"),
    ("a: 1\nb: !!python/tuple [1, 2]\n", 2, "!!python/tuple", "plain YAML list"),
])
def test_error_detectron2_yaml_tags_name_tag_line_and_remedy(tmp_path, text, line, tag, advice):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(tmp_path / "config.yaml")
    message = str(info.value)
    assert f"config.yaml:{line}: YAML tag {tag} is not supported" in message
    assert advice in message and ".py recipe" in message and "\n" not in message


def test_get_config_from_env_root(tree, monkeypatch):
    monkeypatch.setenv("LAZYDET_CONFIGS", str(tree / "configs"))
    assert configs_root() == tree / "configs"
    train = get_config("common/train.py").train
    assert train.max_iter == 90000
    write_tree(tree, {"configs/uses_get_config.py": """
        from lazydet.config import get_config
        train = get_config("common/train.py").train
        lr_multiplier = get_config("common/schedule.py").lr_multiplier_12ep
        train.max_iter = 12
    """})
    cfg = LazyConfig.load(tree / "configs/uses_get_config.py")
    assert cfg.train.max_iter == 12 and cfg.lr_multiplier.scheduler.gamma == 0.1
    with pytest.raises(ConfigError, match=r"get_config\('common/trian.py'\): no file .*trian.py"):
        get_config("common/trian.py")


def test_get_config_default_root_is_repo_configs(monkeypatch):
    monkeypatch.delenv("LAZYDET_CONFIGS", raising=False)
    root = configs_root()
    import lazydet

    assert root.parent == __import__("pathlib").Path(lazydet.__file__).resolve().parent.parent
    assert root.name == "configs" and root.is_dir()


def test_loaded_recipe_instantiates(tree):
    model = instantiate(LazyConfig.load(tree / "projects/demo/configs/recipe.py", keys="model"))
    assert model["backbone"].out_features == 8 and len(model["head"]) == 2


def test_error_syntax_names_file_and_line(tmp_path):
    write_tree(tmp_path, {"broken.py": "train = dict(\n    max_iter=3,\n    lr=0.1 0.2,\n)\n",
                          "uses_broken.py": "from .broken import train\n"})
    for name in ("broken.py", "uses_broken.py"):  # directly and through an import
        with pytest.raises(ConfigError) as info:
            LazyConfig.load(tmp_path / name)
        message = str(info.value)
        assert f"{tmp_path / 'broken.py'}:3: syntax error" in message and "\n" not in message


def test_error_file_not_found(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.py"):
        LazyConfig.load(tmp_path / "nope.py")


def test_error_relative_import_missing_file_and_name(tree):
    write_tree(tree, {"projects/demo/configs/bad.py": "x = dict()\nfrom ..common.train import train\n",
                      "projects/demo/configs/bad_name.py": "from .models.tiny import modle\n"})
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(tree / "projects/demo/configs/bad.py")
    message = str(info.value)
    assert f"{tree / 'projects/demo/configs/bad.py'}:2:" in message
    assert "'..common.train'" in message and str(tree / "projects/demo/common/train") in message
    with pytest.raises(ConfigError, match=r"bad_name\.py:1: cannot import name 'modle' from '\.models\.tiny'"):
        LazyConfig.load(tree / "projects/demo/configs/bad_name.py")


def test_error_runtime_failure_names_file_and_line(tmp_path):
    write_tree(tmp_path, {"r.py": "a = dict(x=1)\nb = dict(y=a.z)\n", "top.py": "from .r import b\n"})
    with pytest.raises(ConfigError, match=r"r\.py:2: AttributeError"):
        LazyConfig.load(tmp_path / "top.py")


def test_error_keys_missing(tree):
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(tree / "projects/demo/configs/recipe.py", keys=("model", "modle"))
    message = str(info.value)
    assert "'modle'" in message and "model" in message and "recipe.py" in message


def test_error_bad_yaml_and_lazycall_in_recipe(tmp_path):
    write_tree(tmp_path, {"bad.yaml": "a: [1, 2\n", "r.py": """
        from lazydet.config import LazyCall as L
        model = L("torch.nn.NoSuchThing")(x=1)
    """})
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: cannot parse YAML"):
        LazyConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"r\.py:2: cannot import 'torch\.nn\.NoSuchThing'"):
        LazyConfig.load(tmp_path / "r.py")


def test_to_yaml_of_loaded_recipe_is_readable(tree):
    cfg = LazyConfig.load(tree / "projects/demo/configs/recipe.py")
    text = OmegaConf.to_yaml(cfg["optimizer"])
    assert "_target_: torch.optim.adamw.AdamW" in text and "<" not in text and "!!" not in text
    sched = OmegaConf.to_yaml(cfg["lr_multiplier"]["scheduler"])
    assert sched.startswith("_target_: torch.optim.lr_scheduler.MultiStepLR") and "milestones:" in sched
    full = OmegaConf.to_yaml(cfg)
    assert "<function" not in full and "<class" not in full and "!!python" not in full
