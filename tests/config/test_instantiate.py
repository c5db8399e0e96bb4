"""LazyCall and instantiate: what is recorded, what is built, and how failures are reported."""
import collections
import fractions
import functools

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from lazydet.config import ConfigError, L, LazyCall, instantiate, locate


class Pair:
    def __init__(self, left, right=None):
        self.left, self.right = left, right

    @classmethod
    def mirrored(cls, value):
        return cls(value, value)


def make_pair(left, right=None):
    return Pair(left, right)


def explode(reason):
    raise RuntimeError(f"exploded because {reason}")


class Adder:
    """A callable object built by a lazy call: ``Adder(k)(x) == x + k``."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return x + self.k


def test_target_that_is_itself_a_lazy_call_is_built_then_called():
    cfg = DictConfig({"_target_": L(Adder)(k=3), "x": 4}, flags={"allow_objects": True})
    assert instantiate(cfg) == 7
    nested = OmegaConf.create({"m": {"_target_": {"_target_": f"{__name__}.Adder", "k": 1},
                                     "x": 1}})
    assert instantiate(nested.m) == 2
    with pytest.raises(ConfigError, match=r"m\._target_: not callable: 5"):
        instantiate(OmegaConf.create({"m": {"_target_": L(int)(5)}}, flags={"allow_objects": True}).m)


def test_lazycall_records_target_as_import_path_and_kwargs():
    cfg = L(Pair)(left=1, right=[1, 2])
    assert isinstance(cfg, DictConfig)
    assert cfg._get_flag("allow_objects") is True
    assert cfg._target_ == f"{__name__}.Pair"
    assert locate(cfg._target_) is Pair
    assert cfg.left == 1 and list(cfg.right) == [1, 2]
    assert LazyCall is L
    assert isinstance(cfg.right, ListConfig)


def test_lazycall_keeps_unimportable_callables_as_objects():
    def local_factory(x):
        return x * 2

    cfg = L(local_factory)(x=21)
    assert cfg._target_ is local_factory
    assert instantiate(cfg) == 42
    lam = L(lambda x: x + 1)(x=1)
    assert instantiate(lam) == 2


def test_lazycall_rejects_non_callables_and_bad_strings():
    with pytest.raises(ConfigError, match="callable or an import path"):
        L(3)
    with pytest.raises(ConfigError, match="torch.nn.NoSuchLayer"):
        L("torch.nn.NoSuchLayer")


def test_instantiate_nested_lists_and_dicts():
    cfg = L(Pair)(
        left=[L(Pair)(left=1), {"inner": L(Pair)(left=2, right={"k": L(fractions.Fraction)(3, 4)})}],
        right={"a": [L(collections.OrderedDict)(x=1)], "plain": "text"},
    )
    obj = instantiate(cfg)
    assert isinstance(obj, Pair)
    assert isinstance(obj.left, list) and isinstance(obj.left[0], Pair) and obj.left[0].left == 1
    inner = obj.left[1]["inner"]
    assert isinstance(inner, Pair) and inner.left == 2
    assert inner.right == {"k": fractions.Fraction(3, 4)}
    assert obj.right["a"] == [collections.OrderedDict(x=1)]
    assert obj.right["plain"] == "text"
    assert type(obj.right) is dict and type(obj.left) is list  # plain containers, not omegaconf ones


def test_instantiate_plain_containers_without_target_elementwise():
    built = instantiate({"x": L(Pair)(left=5), "y": [L(Pair)(left=6), 7], "z": (L(Pair)(left=8),)})
    assert built["x"].left == 5 and built["y"][0].left == 6 and built["y"][1] == 7
    assert isinstance(built["z"], tuple) and built["z"][0].left == 8
    cfg = OmegaConf.create({"m": {"p": L(Pair)(left=1)}, "n": [1, 2]}, flags={"allow_objects": True})
    built = instantiate(cfg)
    assert isinstance(built["m"]["p"], Pair) and built["n"] == [1, 2]


def test_instantiate_passes_objects_through():
    tensor = torch.ones(2)
    assert instantiate(tensor) is tensor
    cfg = OmegaConf.create({"t": L(Pair)(left=tensor)}, flags={"allow_objects": True})
    assert instantiate(cfg.t).left is tensor
    assert instantiate(5) == 5 and instantiate(None) is None


def test_instantiate_import_string_targets():
    cfg = {"_target_": f"{__name__}.make_pair", "left": {"_target_": "fractions.Fraction", "_args_": [1, 3]}}
    pair = instantiate(cfg)
    assert isinstance(pair, Pair) and pair.left == fractions.Fraction(1, 3)
    layer = instantiate(L("torch.nn.Linear")(in_features=2, out_features=3, bias=False))
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (3, 2) and layer.bias is None
    # nested class path: module + attribute chain
    assert instantiate({"_target_": "collections.OrderedDict.fromkeys", "_args_": [["a"]]}) == {"a": None}


def test_positional_args_and_interpolation_are_resolved():
    cfg = OmegaConf.create({"size": 3, "net": L(torch.nn.Linear)("${...size}", out_features="${..size}")},
                           flags={"allow_objects": True})
    net = instantiate(cfg.net)
    assert net.in_features == 3 and net.out_features == 3


def test_callables_as_values_round_trip_through_partial_nodes():
    cfg = L(Pair)(left=torch.nn.GELU, right=functools.partial(make_pair, right=2))
    assert cfg.left == {"_target_": "torch.nn.modules.activation.GELU", "_partial_": True}
    assert cfg.right._partial_ is True and cfg.right.right == 2
    obj = instantiate(cfg)
    assert obj.left is torch.nn.GELU
    assert isinstance(obj.right, functools.partial) and obj.right(1).right == 2 and obj.right(1).left == 1


def test_error_unimportable_target_names_key_and_string():
    cfg = OmegaConf.create({"model": {"backbone": {"_target_": "lazydet.no_such_module.Net"}}},
                           flags={"allow_objects": True})
    with pytest.raises(ConfigError) as info:
        instantiate(cfg)
    message = str(info.value)
    assert "model.backbone._target_" in message and "lazydet.no_such_module.Net" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"model\.backbone\._target_: cannot import 'torch\.nn\.Nope'"):
        instantiate(OmegaConf.create({"model": {"backbone": {"_target_": "torch.nn.Nope"}}}).model)


def test_error_instantiate_failure_names_dotted_path_callable_and_message():
    cfg = OmegaConf.create(
        {"model": L(Pair)(left=L(Pair)(left=L(explode)(reason="the depth was\nnegative")))},
        flags={"allow_objects": True},
    )
    for node in (cfg, cfg.model, cfg.model.left):  # the path is the same whatever node we start from
        with pytest.raises(ConfigError) as info:
            instantiate(node)
        message = str(info.value)
        assert message.startswith("instantiate model.left.left: ")
        assert f"{__name__}.explode" in message
        assert "RuntimeError: exploded because the depth was negative" in message
        assert "\n" not in message
        assert isinstance(info.value.__cause__, RuntimeError)
        assert isinstance(info.value, ValueError)


def test_error_path_inside_lists_and_bad_kwargs():
    cfg = OmegaConf.create({"layers": [L(Pair)(left=1), L(Pair)(lefty=1)]}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match=r"instantiate layers\.1: .*Pair failed: TypeError: .*lefty"):
        instantiate(cfg)


def test_error_missing_value_names_key():
    cfg = OmegaConf.create({"model": L(Pair)(left="???")}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match=r"model\.left: MissingMandatoryValue"):
        instantiate(cfg.model)


def test_class_method_targets_are_stored_as_paths():
    cfg = L(Pair.mirrored)(value=3)
    assert cfg._target_ == f"{__name__}.Pair.mirrored"
    pair = instantiate(cfg)
    assert pair.left == pair.right == 3
    built_in = L(dict.fromkeys)(["a", "b"])
    assert built_in._target_ == "builtins.dict.fromkeys" and instantiate(built_in) == {"a": None, "b": None}
    bound = L(Pair(1).__init__)  # bound to an instance: no import path, kept as the object
    assert not isinstance(bound(left=2)._target_, str)
