"""Write metrics.json files shaped like the engine's (JSON lines, DESIGN.md names) from known curves."""
import json
import os

import numpy as np


def _epoch(it, iters_per_epoch, integer):
    """The engine logs fractional epochs completed, round((it + 1) / ipe, 4); older tools log an integer."""
    return int(it // iters_per_epoch) if integer else round((it + 1) / iters_per_epoch, 4)


def write_run(out_dir, ap_fn, epochs=20, iters_per_epoch=100, log_period=20, noise=0.3, seed=0,
              lr_drop_epoch=None, log_epoch=True, integer_epoch=False, partial_tail=False, milestones=None):
    """A run evaluated at the end of each epoch with bbox/AP = ap_fn(epoch) + noise; returns the metrics path."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    max_iter = epochs * iters_per_epoch
    for it in range(log_period - 1, max_iter, log_period):
        ep = (it + 1) / iters_per_epoch
        lr = 1e-4 * (0.1 if lr_drop_epoch is not None and ep > lr_drop_epoch else 1.0)
        loss = 5.0 * (it + 1) ** -0.3 + rng.normal(0, 0.05)
        rec = {"iteration": it, "total_loss": loss, "loss_class": loss / 3, "lr": lr, "time": 0.1}
        if log_epoch:
            rec["epoch"] = _epoch(it, iters_per_epoch, integer_epoch)
        lines.append(json.dumps(rec))
        if (it + 1) % iters_per_epoch == 0:
            ep_done = (it + 1) // iters_per_epoch
            ap = float(ap_fn(float(ep_done)) + rng.normal(0, noise))
            rec = {"iteration": it, "bbox/AP": ap, "bbox/AP50": min(100.0, 1.5 * ap)}
            if log_epoch:
                rec["epoch"] = _epoch(it, iters_per_epoch, integer_epoch)
            lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if partial_tail:
        text += '{"iteration": %d, "total_loss": 0.5, "l' % (max_iter + log_period - 1)
    path = os.path.join(out_dir, "metrics.json")
    with open(path, "w") as f:
        f.write(text)
    if milestones is not None:
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            f.write("lr_multiplier:\n  _target_: fvcore.common.param_scheduler.MultiStepParamScheduler\n"
                    f"  milestones: {list(milestones)}\n  values: [1.0, 0.1]\n"
                    f"train:\n  max_iter: {max_iter}\n")
    return path
