"""Optimizer parameter groups: lr factors (e.g. ViT layer-wise decay) and no weight decay on norms, biases
and position/class/register tokens. Used from recipes as
`params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0, lr_factor_func=...)`."""
import re

import torch
from torch import nn

# Parameter-name fragments that never get weight decay (embeddings / tokens, not weights of a map).
DEFAULT_NO_WEIGHT_DECAY_KEYS = (
    "pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token", "dist_token",
    "relative_position_bias_table", "absolute_pos_embed",
)

_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)


def is_norm_module(module: nn.Module) -> bool:
    """torch norm layers, plus any class whose name says it is a norm (timm's LayerNorm2d, RmsNorm, ...)."""
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def _timm_no_weight_decay(model: nn.Module) -> set:
    """Full names listed by modules' own `no_weight_decay()` (timm ViTs list pos_embed, cls_token, ...)."""
    names = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                listed = fn()
            except Exception:  # noqa: BLE001 - a broken helper only loses this convenience
                continue
            names |= {f"{prefix}.{n}" if prefix else n for n in listed}
    return names


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float = None,
    weight_decay: float = None,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: float = 0.0,
    weight_decay_embed: float = 0.0,
    bias_lr_factor: float = 1.0,
    lr_factor_func=None,
    no_weight_decay_keys=DEFAULT_NO_WEIGHT_DECAY_KEYS,
    overrides: dict = None,
) -> list:
    """Parameter groups for a torch optimizer, one per distinct (lr, weight_decay).

    Frozen parameters (requires_grad=False) are left out. `lr_factor_func(name) -> float` multiplies the lr
    of each parameter (see `get_vit_lr_decay_rate`). `overrides` maps a parameter-name regex (searched) to
    a dict of `lr`/`weight_decay` values that win over everything else. A group's `group_name` says why it
    exists ("decay", "no_decay", "lr x0.5 decay", ...): the engine prints it in the parameter-group table.
    `base_lr=None`/`weight_decay=None` leave those keys to the optimizer's own defaults.
    """
    overrides = dict(overrides or {})
    no_wd_names = _timm_no_weight_decay(model)
    groups = {}
    seen = set()
    for mod_name, module in model.named_modules():
        norm = is_norm_module(module)
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            hp = {}
            if base_lr is not None:
                hp["lr"] = base_lr
            if weight_decay is not None:
                hp["weight_decay"] = weight_decay
            if norm:
                hp["weight_decay"] = weight_decay_norm
            elif name in no_wd_names or any(k in name for k in no_weight_decay_keys):
                hp["weight_decay"] = weight_decay_embed
            elif p_name == "bias":
                hp["weight_decay"] = weight_decay_bias
                if base_lr is not None and bias_lr_factor != 1.0:
                    hp["lr"] = base_lr * bias_lr_factor
            factor = 1.0
            if lr_factor_func is not None:
                factor = float(lr_factor_func(name))
                if base_lr is not None:
                    hp["lr"] = hp.get("lr", base_lr) * factor
            for pattern, values in overrides.items():
                if re.search(pattern, name):
                    hp.update(values)
            label = "no_decay" if hp.get("weight_decay") == 0.0 else "decay"
            if factor != 1.0:
                label = f"lr x{factor:.4g} {label}"
            key = (tuple(sorted(hp.items())), label)
            groups.setdefault(key, {"params": [], "group_name": label, **hp})["params"].append(param)
    return list(groups.values())


def get_vit_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12,
                          backbone_prefix: str = "backbone") -> float:
    """Layer-wise lr decay for a ViT backbone (BEiT/ViTDet style).

    Block i (`...blocks.<i>....`) gets `lr_decay_rate ** (num_layers - i)`; the patch embedding, position
    embedding and cls/register tokens (layer 0) get `lr_decay_rate ** (num_layers + 1)`; everything else in
    the backbone (final norm) and every parameter outside it gets 1.0.
    """
    if not name.startswith(backbone_prefix):
        return 1.0
    layer_id = num_layers + 1
    if any(k in name for k in ("patch_embed", "pos_embed", "cls_token", "reg_token", "register_tokens",
                               "mask_token")):
        layer_id = 0
    else:
        m = re.search(r"\.blocks\.(\d+)\.", name)
        if m:
            layer_id = int(m.group(1)) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


class ViTLayerDecay:
    """`lr_factor_func` object for recipes: `L(ViTLayerDecay)(lr_decay_rate=0.7, num_layers=12)`."""

    def __init__(self, lr_decay_rate: float = 1.0, num_layers: int = 12, backbone_prefix: str = "backbone"):
        self.lr_decay_rate = lr_decay_rate
        self.num_layers = num_layers
        self.backbone_prefix = backbone_prefix

    def __call__(self, name: str) -> float:
        return get_vit_lr_decay_rate(name, self.lr_decay_rate, self.num_layers, self.backbone_prefix)


def param_group_table(model: nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """Rows (group, #tensors, #params, trainable, lr, weight_decay, example names) for every optimizer
    group, plus one row for the frozen parameters; lr is each group's base lr (`initial_lr` once a
    scheduler is attached, before its multiplier)."""
    names = {id(p): n for n, p in model.named_parameters()}
    rows, in_opt = [], set()
    for i, g in enumerate(optimizer.param_groups):
        params = g["params"]
        in_opt |= {id(p) for p in params}
        examples = [names.get(id(p), "?") for p in params[:2]]
        rows.append({
            "group": g.get("group_name", str(i)),
            "tensors": len(params),
            "params": sum(p.numel() for p in params),
            "trainable": "yes",
            "lr": g.get("initial_lr", g["lr"]),
            "weight_decay": g.get("weight_decay", 0.0),
            "examples": ", ".join(examples) + (", ..." if len(params) > 2 else ""),
        })
    frozen = [(n, p) for n, p in model.named_parameters() if id(p) not in in_opt]
    if frozen:
        rows.append({
            "group": "frozen", "tensors": len(frozen), "params": sum(p.numel() for _, p in frozen),
            "trainable": "no", "lr": 0.0, "weight_decay": 0.0,
            "examples": ", ".join(n for n, _ in frozen[:2]) + (", ..." if len(frozen) > 2 else ""),
        })
    return rows


def format_param_group_table(rows: list) -> str:
    """`param_group_table` rows as a Markdown table (the one train_net logs at the start)."""
    from tabulate import tabulate

    body = [[r["group"], r["tensors"], f"{r['params']:,}", r["trainable"], f"{r['lr']:.4g}",
             f"{r['weight_decay']:.4g}", r["examples"]] for r in rows]
    return tabulate(body, headers=["group", "tensors", "params", "trainable", "lr", "weight_decay", "examples"],
                    tablefmt="pipe")
