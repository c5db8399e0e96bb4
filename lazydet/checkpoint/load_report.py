"""Matching a state dict against a model, and the report of what loaded (the silent "pretrained weights
never loaded" bug is common: the counts here are what the doctor checks)."""
from dataclasses import dataclass, field

import torch


@dataclass
class LoadReport:
    """What loading the state dict of `source` into a model did: model tensors `matched`, `missing` (keep their
    init), `unexpected` checkpoint keys (ignored), `shape_mismatched` (not loaded), and the model `prefix` the
    checkpoint keys were placed under. The doctor reads `coverage`."""
    source: str
    num_model_keys: int
    matched: list = field(default_factory=list)
    missing: list = field(default_factory=list)          # model keys the checkpoint does not have
    unexpected: list = field(default_factory=list)       # checkpoint keys the model does not have
    shape_mismatched: list = field(default_factory=list)  # (key, checkpoint shape, model shape), not loaded
    prefix: str = ""                                      # model prefix the checkpoint keys were placed under

    @property
    def coverage(self) -> float:
        """Fraction of the model's tensors that received checkpoint values."""
        return len(self.matched) / max(self.num_model_keys, 1)

    def counts(self) -> dict:
        """The list lengths as a dict (for logs and JSON)."""
        return {"matched": len(self.matched), "missing": len(self.missing), "unexpected": len(self.unexpected),
                "shape_mismatched": len(self.shape_mismatched), "model_keys": self.num_model_keys}

    def format(self, max_lines: int = 20) -> str:
        """A summary line plus up to `max_lines` keys per problem kind, for the log."""
        where = f" under prefix '{self.prefix}'" if self.prefix else ""
        lines = [f"Loaded {self.source}{where}: {len(self.matched)}/{self.num_model_keys} model tensors matched "
                 f"({100 * self.coverage:.1f}%), {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                 f"{len(self.shape_mismatched)} shape-mismatched."]

        def section(title, items):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {x}" for x in items[:max_lines])
                if len(items) > max_lines:
                    lines.append(f"    ... and {len(items) - max_lines} more")

        section("shape mismatch, not loaded (key: checkpoint -> model)",
                [f"{k}: {tuple(a)} -> {tuple(b)}" for k, a, b in self.shape_mismatched])
        section("missing in checkpoint (keep their init)", self.missing)
        section("unexpected in checkpoint (ignored)", self.unexpected)
        return "\n".join(lines)


def strip_prefix(state: dict, prefix: str) -> dict:
    """`state` with `prefix` removed from its keys when every key has it (e.g. DDP's "module."), else `state`."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def best_prefix(model_keys: set, ckpt_keys, candidates) -> str:
    """The module prefix under which most checkpoint keys exist in the model ("" = as they are)."""
    best, best_n = "", sum(k in model_keys for k in ckpt_keys)
    for p in candidates:
        n = sum((p + k) in model_keys for k in ckpt_keys)
        if n > best_n:
            best, best_n = p, n
    return best


def load_state_into(model: torch.nn.Module, state: dict, source: str, auto_prefix: bool = True) -> LoadReport:
    """Copy every tensor of `state` whose key and shape match into `model`; report the rest."""
    state = strip_prefix(dict(state), "module.")
    model_state = model.state_dict()
    prefix = ""
    if auto_prefix:
        candidates = [n + "." for n, _ in model.named_modules() if n]
        prefix = best_prefix(set(model_state), list(state), candidates)
    placed = {prefix + k: v for k, v in state.items()}
    report = LoadReport(source=source, num_model_keys=len(model_state), prefix=prefix)
    to_load = {}
    for k, v in placed.items():
        if k not in model_state:
            report.unexpected.append(k[len(prefix):])
        elif not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(model_state[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            report.shape_mismatched.append((k, shape, tuple(model_state[k].shape)))
        else:
            to_load[k] = v
            report.matched.append(k)
    mismatched = {k for k, _, _ in report.shape_mismatched}
    report.missing = [k for k in model_state if k not in to_load and k not in mismatched]
    model.load_state_dict(to_load, strict=False)
    return report
