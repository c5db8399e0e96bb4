"""LazyConfig.apply_overrides: parsing, nested keys, lists, '+' new keys, and the errors people meet daily."""
import pytest
from omegaconf import OmegaConf

from lazydet.config import ConfigError, L, LazyConfig, instantiate
from lazydet.config.overrides import parse_value


def base_config():
    return OmegaConf.create({
        "model": {"backbone": {"net": L(dict)(model_name="vit_base_patch14_dinov2.lvd142m", img_size=518,
                                              drop_path_rate=0.1, pretrained=True)},
                  "pixel_mean": [123.675, 116.28, 103.53], "num_classes": 80},
        "train": {"max_iter": 90000, "lr": 1e-4, "output_dir": "./output", "amp": {"enabled": False},
                  "init_checkpoint": None, "log_dir": "${.output_dir}/logs", "milestones": [1, 2],
                  "dataset_root": "???"},
        "optimizer": L(dict)(lr=1e-4, weight_decay=0.05),
    }, flags={"allow_objects": True})


@pytest.mark.parametrize("text,value", [
    ("1", 1), ("1.5", 1.5), ("1e-4", 1e-4), ("True", True), ("true", True), ("false", False), ("None", None),
    ("null", None), ("[1, 2]", [1, 2]), ("(1, 2)", (1, 2)), ("{'a': 1}", {"a": 1}), ("'quoted'", "quoted"),
    ("vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_dinov2.lvd142m"), ("./out/dir", "./out/dir"),
    ("a b", "a b"),
])
def test_parse_value(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_nested_overrides_apply_in_order():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, [
        "model.backbone.net.model_name=vit_small_patch14_dinov2.lvd142m",
        "model.backbone.net.img_size=224",
        "train.max_iter=100",
        "train.max_iter=200",
        "train.amp.enabled=True",
        "train.output_dir=/tmp/run",
        "train.init_checkpoint=weights/model.pth",
    ])
    assert cfg.model.backbone.net.model_name == "vit_small_patch14_dinov2.lvd142m"
    assert cfg.model.backbone.net.img_size == 224 and cfg.train.max_iter == 200
    assert cfg.train.amp.enabled is True and cfg.train.log_dir == "/tmp/run/logs"
    assert cfg.train.init_checkpoint == "weights/model.pth"
    assert instantiate(cfg.model.backbone.net)["img_size"] == 224


def test_numbers_none_and_strings():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, ["train.lr=1", "model.backbone.net.drop_path_rate=0", "train.max_iter=None",
                                     "train.output_dir=2024"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int into float field: converted
    assert isinstance(cfg.model.backbone.net.drop_path_rate, float)
    assert cfg.train.max_iter is None
    assert cfg.train.output_dir == "2024"  # a string field keeps what was typed
    LazyConfig.apply_overrides(cfg, ["train.dataset_root=3"])  # a mandatory ??? value takes anything
    assert cfg.train.dataset_root == 3


def test_list_values_and_items():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, ["model.pixel_mean=[0.0, 0.0, 0.0]", "train.milestones.1=5",
                                     "train.milestones=[10, 20, 30]", "train.milestones.-1=31"])
    assert list(cfg.model.pixel_mean) == [0.0, 0.0, 0.0]
    assert list(cfg.train.milestones) == [10, 20, 31]
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.milestones\.7'"):
        LazyConfig.apply_overrides(cfg, ["train.milestones.7=1"])


def test_plus_adds_new_keys_only():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, ["+train.foo=1", "+train.new.nested.key=abc", "+extra=[1]"])
    assert cfg.train.foo == 1 and cfg.train.new.nested.key == "abc" and list(cfg.extra) == [1]
    with pytest.raises(ConfigError, match=r"cannot add 'train\.max_iter': it already exists"):
        LazyConfig.apply_overrides(cfg, ["+train.max_iter=1"])
    LazyConfig.apply_overrides(cfg, ["++train.max_iter=7", "++train.other=2"])
    assert cfg.train.max_iter == 7 and cfg.train.other == 2


def test_error_unknown_key_names_closest():
    cfg = base_config()
    with pytest.raises(ConfigError) as info:
        LazyConfig.apply_overrides(cfg, ["train.max_iters=10"])
    message = str(info.value)
    assert "'train.max_iters'" in message and "closest existing keys: train.max_iter" in message
    assert "+train.max_iters" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"unknown config key 'modle\.backbone\.net\.img_size' \(no 'modle'\);"
                                          r" closest existing keys: model\.backbone\.net\.img_size"):
        LazyConfig.apply_overrides(cfg, ["modle.backbone.net.img_size=3"])
    with pytest.raises(ConfigError, match=r"closest existing keys: .*model\.backbone\.net\.model_name"):
        LazyConfig.apply_overrides(cfg, ["model.backbone.net.modelname=x"])
    assert cfg == base_config()  # failed overrides changed nothing


@pytest.mark.parametrize("override,old_type", [
    ("train.max_iter=ten", "int"),
    ("train.lr=fast", "float"),
    ("train.amp.enabled=yes", "bool"),
    ("train.amp.enabled=1", "bool"),
    ("model.num_classes={'a': 1}", "int"),
    ("model.pixel_mean=3", "list"),
    ("train.amp=5", "dict"),
])
def test_error_wrong_type_names_key_type_and_value(override, old_type):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as info:
        LazyConfig.apply_overrides(base_config(), [override])
    message = str(info.value)
    assert f"override {key}={value}: wrong type: the key holds a{'n' if old_type[0] in 'aeiou' else ''} {old_type}" \
        in message
    assert "\n" not in message


def test_error_malformed_and_through_a_leaf():
    with pytest.raises(ConfigError, match="bad override 'train.max_iter': expected dotted.key=value"):
        LazyConfig.apply_overrides(base_config(), ["train.max_iter"])
    with pytest.raises(ConfigError, match=r"cannot set 'train\.lr\.x': 'train\.lr' holds 0\.0001, not a dict"):
        LazyConfig.apply_overrides(base_config(), ["train.lr.x=1"])


def test_override_targets_and_dicts():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, ["optimizer._target_=collections.OrderedDict", "train.amp={'enabled': True}"])
    assert type(instantiate(cfg.optimizer)).__name__ == "OrderedDict" and cfg.train.amp.enabled is True


def test_override_callable_arguments_and_targets_are_checked():
    import torch

    cfg = OmegaConf.create({"model": L(dict)(act=torch.nn.GELU, depth=2)}, flags={"allow_objects": True})
    LazyConfig.apply_overrides(cfg, ["model.act=torch.nn.ReLU"])
    assert instantiate(cfg.model)["act"] is torch.nn.ReLU
    with pytest.raises(ConfigError, match=r"override model\.act=torch\.nn\.Relu: cannot import 'torch\.nn\.Relu'"):
        LazyConfig.apply_overrides(cfg, ["model.act=torch.nn.Relu"])
    with pytest.raises(ConfigError, match=r"override model\._target_=collections\.OrderDict: cannot import"):
        LazyConfig.apply_overrides(cfg, ["model._target_=collections.OrderDict"])
    with pytest.raises(ConfigError, match=r"override model\._target_=3: expected an import path"):
        LazyConfig.apply_overrides(cfg, ["model._target_=3"])


def test_interpolation_values_are_checked_by_what_they_resolve_to():
    cfg = base_config()
    LazyConfig.apply_overrides(cfg, ["model.num_classes=${train.max_iter}", "train.lr=${model.num_classes}",
                                     "train.output_dir=/runs/${train.max_iter}"])
    assert OmegaConf.to_container(cfg.model)["num_classes"] == "${train.max_iter}"  # kept as an interpolation
    assert cfg.model.num_classes == 90000 and cfg.train.lr == 90000 and cfg.train.output_dir == "/runs/90000"
    LazyConfig.apply_overrides(cfg, ["train.max_iter=10"])
    assert cfg.model.num_classes == 10  # follows its source
    with pytest.raises(ConfigError) as info:
        LazyConfig.apply_overrides(cfg, ["model.num_classes=${train.output_dir}"])
    assert "wrong type: the key holds an int (10)" in str(info.value) and "resolves to '/runs/10'" in str(info.value)
    with pytest.raises(ConfigError, match=r"model\.num_classes=\$\{train\.nope\}: cannot resolve the interpolation"):
        LazyConfig.apply_overrides(cfg, ["model.num_classes=${train.nope}"])
    assert cfg.model.num_classes == 10  # a refused override leaves the old value
    # a key holding an interpolation is checked against what it resolves to
    with pytest.raises(ConfigError, match=r"override train\.lr=abc: wrong type: the key holds an int \(10\)"):
        LazyConfig.apply_overrides(cfg, ["train.lr=abc"])
