"""forecast_curve / plot_metrics end to end on metrics.json files written like the engine's."""
import json
import math
import os

import pytest

from lazydet.analysis.forecast import forecast_run
from lazydet.analysis.metrics_io import load_run
from tools import forecast_curve, plot_metrics

from .fake_runs import write_run


def power(e):
    return 50 - 40 * e ** -0.7


def test_forecast_tool_writes_report_plots_and_json(tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_run(str(run_dir), power, epochs=20, partial_tail=True)
    forecast_curve.main([str(run_dir), "--target-epoch", "50", "--bootstrap", "50"])
    out = capsys.readouterr().out
    for name in ("logarithmic", "log_linear", "power_law (chosen)", "forecast"):
        assert name in out
    plots = run_dir / "plots"
    for f in ("val_bbox_AP.png", "train_loss.png", "fits_bbox_AP.png", "forecast_bbox_AP.png"):
        assert (plots / f).stat().st_size > 10_000
    summary = json.loads((plots / "forecast_bbox_AP.json").read_text())
    assert summary["chosen_model"] == "power_law"
    assert abs(summary["forecast"] - power(50.0)) < 1.5
    assert len(summary["models"]) == 3 and all(m["heldout_rmse"] is not None for m in summary["models"])


def test_lr_drop_inside_observed_range_warns_optimistic(tmp_path):
    write_run(str(tmp_path), lambda e: power(e) + (3 if e > 12 else 0), epochs=20, lr_drop_epoch=12)
    result = forecast_run(load_run(str(tmp_path)), num_samples=20)
    assert [d.source for d in result.lr_drops] == ["logged lr"]
    assert result.lr_drops[0].factor == pytest.approx(0.1)
    assert 12 < result.lr_drops[0].epoch <= 12.2
    assert any("OPTIMISTIC" in w for w in result.warnings)


def test_recipe_lr_drop_before_target_warns_pessimistic(tmp_path):
    # 100 iterations per epoch; the saved recipe drops the lr at iteration 4000 = epoch 40 (the 50ep recipe).
    write_run(str(tmp_path), power, epochs=20, milestones=[4000])
    result = forecast_run(load_run(str(tmp_path)), target_epoch=50, num_samples=20)
    assert [(d.epoch, d.source) for d in result.lr_drops] == [(40.0, "recipe")]
    assert any("PESSIMISTIC" in w for w in result.warnings)
    assert not any("OPTIMISTIC" in w for w in result.warnings)


def test_user_lr_drop_and_iters_per_epoch_without_epoch_field(tmp_path):
    write_run(str(tmp_path), power, epochs=20, log_epoch=False)
    result = forecast_run(load_run(str(tmp_path)), iters_per_epoch=100, lr_drop_epochs=[45], num_samples=20)
    assert result.epochs[0] == 1.0 and result.epochs[-1] == 20.0
    assert any("PESSIMISTIC" in w for w in result.warnings)


def test_too_few_points_exits_with_clear_message(tmp_path, capsys):
    write_run(str(tmp_path), power, epochs=4)
    with pytest.raises(SystemExit) as e:
        forecast_curve.main([str(tmp_path), "--no-plots"])
    assert e.value.code == 1
    assert "too few points" in capsys.readouterr().err


def test_unknown_metric_names_the_available_ones(tmp_path, capsys):
    write_run(str(tmp_path), power, epochs=8)
    with pytest.raises(SystemExit):
        forecast_curve.main([str(tmp_path), "--metric", "segm/AP", "--no-plots"])
    err = capsys.readouterr().err
    assert "no 'segm/AP' values" in err and "bbox/AP" in err


def test_plot_metrics_compares_runs_in_one_png(tmp_path):
    a = write_run(str(tmp_path / "a"), power, epochs=6)
    write_run(str(tmp_path / "b"), lambda e: 10 + 8 * math.log(e), epochs=6, seed=1)
    out = tmp_path / "cmp.png"
    plot_metrics.main([os.path.dirname(a), str(tmp_path / "b"), "--out", str(out)])
    assert out.stat().st_size > 20_000


def test_recipe_drop_of_relative_multistep_schedule(tmp_path):
    # lazydet's multistep_multiplier is relative: step 2700 of 3000 with train.max_iter 2000 -> iteration 1800.
    write_run(str(tmp_path), power, epochs=20)
    (tmp_path / "config.yaml").write_text(
        "lr_multiplier:\n  _target_: lazydet.solver.schedulers.multistep_multiplier\n  max_iter: 3000\n"
        "  steps:\n  - 2700\n  gamma: 0.1\n  warmup_iters: 100\ntrain:\n  max_iter: 2000\n")
    from lazydet.analysis.forecast import recipe_lr_drops

    drops = recipe_lr_drops(str(tmp_path), iters_per_epoch=100)
    assert [(d.epoch, d.factor) for d in drops] == [(pytest.approx(18.0), pytest.approx(0.1))]
    result = forecast_run(load_run(str(tmp_path)), num_samples=20)
    assert any("OPTIMISTIC" in w for w in result.warnings)
