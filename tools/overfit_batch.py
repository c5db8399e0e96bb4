"""Train on one fixed batch: the fastest way to tell a bug from a hyperparameter.

    python -m tools.overfit_batch --config-file F [--iters N] [key=value ...]

A healthy detector drives the loss on one batch down by >= 90% and its AP on that batch up; if it cannot,
the model, loss, targets or optimizer are broken (try this before tuning anything). Writes
plots/overfit_batch.png under train.output_dir (or --output-dir). Exit status 0 pass, 1 fail.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from lazydet.diagnostics import probes


def main(argv=None) -> int:
    """Train the recipe's parts on one batch; exit status 0 when the loss falls enough and the AP rises."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="recipe (.py) or saved config.yaml")
    parser.add_argument("--iters", type=int, default=400,
                        help="steps on the batch (default 400; the quickstart DINO needs about 300)")
    parser.add_argument("--min-drop", type=float, default=0.9, help="required relative loss drop (default 0.9)")
    parser.add_argument("--device", default=None, help="default: train.device")
    parser.add_argument("--output-dir", default=None, help="default: train.output_dir")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    parts = probes.build_parts(args.config_file, args.opts, args.device)
    cfg, model, optimizer = parts.cfg, parts.model, parts.optimizer
    batch = probes.train_batches(parts, 1)[0]
    ap_before = probes.batch_ap(model, batch).get("bbox/AP", 0.0)
    losses = probes.overfit_batch(model, optimizer, batch, args.iters, probes.clip_norm(cfg))
    ap_after = probes.batch_ap(model, batch).get("bbox/AP", 0.0)
    drop = probes.relative_drop(losses)
    out_dir = args.output_dir or cfg.train.output_dir
    plot = probes.save_plot(os.path.join(out_dir, "plots", "overfit_batch.png"), range(1, len(losses) + 1), losses,
                            title=f"one batch, {len(batch['targets'])} images", xlabel="step", ylabel="total loss")
    ids = [t["image_id"] for t in batch["targets"]]
    loss_ok, ap_ok = drop >= args.min_drop, ap_after > ap_before
    print(f"batch image ids: {ids}")
    print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f} ({100 * drop:.1f}% drop over {len(losses)} steps; "
          f"need >= {100 * args.min_drop:.0f}%): {'OK' if loss_ok else 'FAIL'}")
    print(f"AP on this batch: {ap_before:.2f} -> {ap_after:.2f}: {'OK' if ap_ok else 'FAIL'}")
    print(f"plot: {plot}")
    if loss_ok and ap_ok:
        print("PASS: the model can fit one batch; if full training does not learn, look at hyperparameters/data.")
        return 0
    if not loss_ok and probes.still_falling(losses):
        print("FAIL (not finished): the loss is still falling; run again with more --iters.")
    else:
        print("FAIL: the model cannot fit one batch: suspect the loss, the targets (format, labels), frozen or "
              "unoptimised parameters, or an lr far off (run tools/lr_find).")
    return 1


if __name__ == "__main__":
    sys.exit(main())
