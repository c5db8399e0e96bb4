"""Checks on parameters and optimizers: coverage, gradients, frozen modules, changes, update/weight ratios.

All work on real `nn.Module` / `torch.optim.Optimizer` objects and return `Finding`s. Watching costs a
fixed sub-sample of each tensor (a few hundred numbers), so the hook can leave them on.
"""
from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .findings import Finding


def summarize_names(names: Sequence[str], limit: int = 8, depth: int = 3) -> str:
    """'a.b.c.weight, ...' shortened to module prefixes with counts: 'class_embed.0 (2), bbox_embed (4)'."""
    groups: dict[str, int] = defaultdict(int)
    for n in names:
        groups[".".join(n.split(".")[:depth])] += 1
    parts = [f"{k} ({v})" if v > 1 else k for k, v in groups.items()]
    more = f", ... {len(parts) - limit} more modules" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _as_list(optimizers) -> list[torch.optim.Optimizer]:
    if optimizers is None:
        return []
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    return list(optimizers)


def param_group_index(model: nn.Module, optimizers) -> dict[str, list[tuple[int, int]]]:
    """For each named parameter: the (optimizer index, group index) pairs that hold it."""
    where: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for oi, opt in enumerate(_as_list(optimizers)):
        for gi, group in enumerate(opt.param_groups):
            for p in group["params"]:
                where[id(p)].append((oi, gi))
    return {n: where.get(id(p), []) for n, p in model.named_parameters()}


def check_optimizer_coverage(model: nn.Module, optimizers, iteration=None,
                             ignore: Iterable[str] = ()) -> list[Finding]:
    """Trainable parameters in no optimizer group, parameters in two, frozen parameters in one."""
    index = param_group_index(model, optimizers)
    params = dict(model.named_parameters())
    ignore = tuple(ignore)
    skip = lambda n: any(fnmatch.fnmatch(n, pat) for pat in ignore)  # noqa: E731
    missing = [n for n, where in index.items() if params[n].requires_grad and not where and not skip(n)]
    doubled = [n for n, where in index.items() if len(where) > 1]
    frozen_in = [n for n, where in index.items() if where and not params[n].requires_grad]
    out = []
    if missing:
        count = sum(params[n].numel() for n in missing)
        out.append(Finding("params_not_in_optimizer", "error",
                           f"{len(missing)} trainable tensors ({count:,} params) in no optimizer group: "
                           f"{summarize_names(missing)}", iteration, {"names": missing}))
    if doubled:
        out.append(Finding("params_in_two_groups", "error",
                           f"{len(doubled)} tensors in several groups: " + ", ".join(
                               f"{n} -> {index[n]}" for n in doubled[:5]), iteration, {"names": doubled}))
    if frozen_in:
        out.append(Finding("frozen_in_optimizer", "warning",
                           f"{len(frozen_in)} frozen tensors are in the optimizer: {summarize_names(frozen_in)}",
                           iteration, {"names": frozen_in}))
    return out


def frozen_modules(model: nn.Module) -> list[str]:
    """The largest submodules whose parameters are all frozen (their parent has trainable ones)."""
    out = []

    def visit(prefix: str, module: nn.Module):
        params = list(module.parameters())
        if not params:
            return
        if not any(p.requires_grad for p in params):
            out.append(prefix or "<model>")
            return
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return out


def check_unexpected_frozen(model: nn.Module, expected_frozen: Iterable[str] = ("backbone*",),
                            iteration=None) -> Finding | None:
    """Completely frozen modules that match none of the `expected_frozen` name patterns."""
    patterns = tuple(expected_frozen)
    sizes = dict(model.named_modules())
    bad = [m for m in frozen_modules(model) if not any(fnmatch.fnmatch(m, p) for p in patterns)]
    if not bad:
        return None
    desc = ", ".join(f"{m} ({sum(p.numel() for p in (model if m == '<model>' else sizes[m]).parameters()):,} "
                     f"params)" for m in bad[:8])
    return Finding("unexpected_frozen", "warning",
                   f"frozen modules outside expected_frozen={list(patterns)}: {desc}", iteration, {"modules": bad})


class GradPresence:
    """Accumulates, over the first iterations, which trainable parameters ever got a non-zero gradient."""

    def __init__(self, model: nn.Module, ignore: Iterable[str] = ()):
        self.names = [n for n, p in model.named_parameters()
                      if p.requires_grad and not any(fnmatch.fnmatch(n, pat) for pat in ignore)]
        self.seen: set[str] = set()
        self.observations = 0

    @torch.no_grad()
    def observe(self, model: nn.Module) -> None:
        """After backward: marks every tracked parameter whose `.grad` has a non-zero entry (one host sync for
        all the still-unseen ones)."""
        params = dict(model.named_parameters())
        pending = [n for n in self.names if n not in self.seen and params[n].grad is not None]
        if pending:
            norms = torch.stack([params[n].grad.detach().float().abs().amax() for n in pending]).cpu()
            self.seen.update(n for n, v in zip(pending, norms.tolist()) if v != 0)
        self.observations += 1

    def finding(self, model: nn.Module, iteration=None) -> Finding | None:
        """`params_without_grad` naming the trainable tensors that never got a non-zero gradient in the
        observed iterations (frozen-by-mistake or disconnected parts), or None when every one did."""
        missing = [n for n in self.names if n not in self.seen]
        if not missing:
            return None
        params = dict(model.named_parameters())
        count = sum(params[n].numel() for n in missing)
        return Finding("params_without_grad", "warning",
                       f"{len(missing)} trainable tensors ({count:,} params) got no gradient in "
                       f"{self.observations} iterations: {summarize_names(missing)}", iteration, {"names": missing})


def _sample_index(p: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    n = p.numel()
    if n <= k:
        return torch.arange(n, device=p.device)
    return torch.randint(0, n, (k,), generator=generator).to(p.device)


class ParamFingerprint:
    """A fixed sub-sample of every trainable tensor, to tell later which ones never changed."""

    def __init__(self, model: nn.Module, optimizers, samples: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        in_opt = {n for n, where in param_group_index(model, optimizers).items() if where}
        self.index: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and n in in_opt:
                    idx = _sample_index(p, samples, g)
                    self.index[n] = idx
                    self.values[n] = p.detach().reshape(-1)[idx].clone()

    @torch.no_grad()
    def unchanged(self, model: nn.Module) -> list[str]:
        """Names of the fingerprinted tensors whose sampled values are still exactly the initial ones."""
        params = dict(model.named_parameters())
        return [n for n, v in self.values.items()
                if n in params and torch.equal(params[n].detach().reshape(-1)[self.index[n]], v)]

    def finding(self, model: nn.Module, iteration=None, lrs: dict[str, float] | None = None) -> Finding | None:
        """`params_never_change` for the optimizer's tensors that have not moved since the fingerprint (an lr of 0,
        a missing optimizer group, gradients always zero), with their groups' lr from `lrs` {name: lr}; None
        when everything moved."""
        same = self.unchanged(model)
        if not same:
            return None
        lr_note = ""
        if lrs:
            lr_set = sorted({lrs.get(n) for n in same if n in lrs}, key=lambda x: (x is None, x))
            lr_note = f"; their groups' lr: {lr_set}"
        return Finding("params_never_change", "warning",
                       f"{len(same)} tensors in the optimizer unchanged since the start: "
                       f"{summarize_names(same)}{lr_note}", iteration, {"names": same})


def group_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """A readable name per param group: its modules, shortened."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [summarize_names([by_id.get(id(p), "?") for p in g["params"]], limit=3, depth=2)
            for g in optimizer.param_groups]


class UpdateRatioProbe:
    """Measures ||delta w|| / ||w|| per param group over one optimizer step, on a fixed sub-sample."""

    def __init__(self, samples_per_tensor: int = 64, seed: int = 0):
        self.samples = samples_per_tensor
        self.generator = torch.Generator().manual_seed(seed)
        self._index: dict[int, torch.Tensor] = {}
        self._before: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._lrs: list[float] = []

    @torch.no_grad()
    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Snapshots a fixed sub-sample of every parameter that has a gradient, and each group's lr, just before
        `optimizer.step()`; `after_step()` then compares."""
        self._before, self._lrs = [], []
        for group in optimizer.param_groups:
            snaps = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                idx = self._index.get(id(p))
                if idx is None:
                    idx = self._index[id(p)] = _sample_index(p, self.samples, self.generator)
                snaps.append((p, p.detach().reshape(-1)[idx].float().clone()))
            self._before.append(snaps)
            self._lrs.append(float(group["lr"]))

    @torch.no_grad()
    def after_step(self) -> list[dict]:
        """One dict per group: index, lr (as used in the step), ratio (None if the group had no grads)."""
        if self._before is None:
            return []
        out = []
        for gi, (snaps, lr) in enumerate(zip(self._before, self._lrs)):
            if not snaps:
                out.append({"group": gi, "lr": lr, "ratio": None})
                continue
            before = torch.cat([s for _, s in snaps])
            after = torch.cat([p.detach().reshape(-1)[self._index[id(p)]].float() for p, _ in snaps])
            w = float(before.norm())
            out.append({"group": gi, "lr": lr, "ratio": float((after - before).norm()) / max(w, 1e-12)})
        self._before = None
        return out


def check_update_ratios(ratios: Sequence[dict], names: Sequence[str] | None = None, *, low: float = 1e-6,
                        high: float = 0.1, iteration=None) -> list[Finding]:
    """Groups whose update/weight ratio is above `high` or below `low` (with the lr each really got)."""
    hi = [r for r in ratios if r["ratio"] is not None and r["ratio"] > high]
    lo = [r for r in ratios if r["ratio"] is not None and r["ratio"] < low]

    def fmt(rs):
        return "; ".join(f"group {r['group']}" + (f" [{names[r['group']]}]" if names else "") +
                         f": ratio {r['ratio']:.2e} at lr {r['lr']:.2e}" for r in rs)

    out = []
    if hi:
        out.append(Finding("update_ratio_high", "warning", f"above {high:g}: {fmt(hi)}", iteration, {"groups": hi}))
    if lo:
        out.append(Finding("update_ratio_low", "warning", f"below {low:g}: {fmt(lo)}", iteration, {"groups": lo}))
    return out


def grad_health(model: nn.Module) -> tuple[float, list[str]]:
    """Total gradient norm and the names of parameters whose gradient holds a NaN/inf (one device sync)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return 0.0, []
    norms = torch.stack([x.float() for x in torch._foreach_norm([g.detach() for _, g in named])]).cpu()
    finite = torch.isfinite(norms).tolist()
    bad = [n for (n, _), ok in zip(named, finite) if not ok]
    return float(torch.linalg.vector_norm(norms)), bad
