"""tools/overfit_batch and tools/lr_find end to end on the stand-in recipe (a few steps: smoke only)."""
import pytest

from tests.diagnostics.runs import recipe_path

pytestmark = pytest.mark.slow
SMALL = ["dataloader.train.total_batch_size=2", "train.device=cpu"]


def test_overfit_batch_tool(tmp_path, capsys):
    from tools.overfit_batch import main
    rc = main(["--config-file", recipe_path(), "--iters", "3", "--output-dir", str(tmp_path), *SMALL])
    out = capsys.readouterr().out
    assert rc == 1 and "% drop over 3 steps" in out and "FAIL" in out  # 3 steps cannot fit a batch
    assert (tmp_path / "plots" / "overfit_batch.png").stat().st_size > 1000


def test_lr_find_tool(tmp_path, capsys):
    from tools.lr_find import main
    rc = main(["--config-file", recipe_path(), "--iters", "12", "--batches", "2", "--start", "1e-5",
               "--end", "10", "--output-dir", str(tmp_path), *SMALL])
    out = capsys.readouterr().out
    assert "tested" in out and (tmp_path / "plots" / "lr_find.png").stat().st_size > 1000
    assert rc in (0, 1)
