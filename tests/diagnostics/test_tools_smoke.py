"""tools/overfit_batch and tools/lr_find end to end on the quickstart recipe, shrunk so that a healthy model
fits its batch in 30 steps (1 image of 112 px, a 1-block ViT, 1 + 2 transformer layers, 20 queries)."""
import re

import pytest

from tests.diagnostics.runs import recipe_path

pytestmark = pytest.mark.slow
TINY = ["train.device=cpu", "dataloader.train.total_batch_size=1", "dataloader.train.mapper.augmentation.min_sizes=[112]",
        "model.backbone.net.depth=1", "model.backbone.net.img_size=112", "model.transformer.encoder.num_layers=1",
        "model.transformer.decoder.num_layers=2", "model.num_queries=20", "model.dn_number=4"]
OVERFIT = ["--iters", "30", "--min-drop", "0.5"]  # flags first: the overrides take the rest of the line
FAST_LR = ["optimizer.lr=3e-3", "train.clip_grad.enabled=False"]


def test_overfit_batch_tool_passes_a_healthy_model_and_fails_a_frozen_one(tmp_path, capsys):
    from tools.overfit_batch import main
    rc = main(["--config-file", recipe_path(), *OVERFIT, "--output-dir", str(tmp_path), *TINY, *FAST_LR])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS: the model can fit one batch" in out, out
    drop = float(re.search(r"\(([\d.]+)% drop over 30 steps; need >= 50%\): OK", out).group(1))
    ap_before, ap_after = map(float, re.search(r"AP on this batch: ([\d.]+) -> ([\d.]+): OK", out).groups())
    assert drop >= 50 and ap_after > ap_before
    assert (tmp_path / "plots" / "overfit_batch.png").stat().st_size > 1000

    # The same run with the weights never updated (lr 0) must fail on both counts.
    rc = main(["--config-file", recipe_path(), *OVERFIT, "--output-dir", str(tmp_path / "frozen"), *TINY,
               *FAST_LR, "optimizer.lr=0.0"])
    out = capsys.readouterr().out
    assert rc == 1 and "need >= 50%): FAIL" in out and re.search(r"AP on this batch: ([\d.]+) -> \1: FAIL", out)


def test_lr_find_tool_suggests_lrs_from_the_tested_range(tmp_path, capsys):
    from tools.lr_find import main
    start, end, iters = 1e-5, 10.0, 16
    rc = main(["--config-file", recipe_path(), "--iters", str(iters), "--batches", "2", "--start", str(start),
               "--end", str(end), "--output-dir", str(tmp_path), *TINY])
    out = capsys.readouterr().out
    assert rc == 0, out
    tested = int(re.search(r"tested (\d+) lrs from 1.00e-05", out).group(1))
    steepest, min_div_10, explode_div_10 = map(float, re.search(
        r"steepest descent (\S+); loss minimum / 10 (\S+); explosion point / 10 (\S+)", out).groups())
    grid = [start * (end / start) ** (i / (iters - 1)) for i in range(tested)]  # the lrs the tool stepped through

    def on_grid(lr):  # printed with 3 significant digits; neighbouring grid lrs are 2.5x apart
        return any(abs(lr - g) <= 6e-3 * g for g in grid)

    # each suggestion is a tested lr (or a tenth of one), in the order the curve implies:
    # steepest descent not after the minimum, the explosion after it
    assert on_grid(steepest) and on_grid(10 * min_div_10) and on_grid(10 * explode_div_10), out
    assert steepest <= 10 * min_div_10 * 1.006 and 10 * min_div_10 < 10 * explode_div_10
    assert (tmp_path / "plots" / "lr_find.png").stat().st_size > 1000
