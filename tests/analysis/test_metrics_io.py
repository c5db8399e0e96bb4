import json
import math

import pytest

from lazydet.analysis.metrics_io import MetricsError, infer_iters_per_epoch, load_run, parse_metrics_lines, to_epochs

from .fake_runs import write_run


def test_partial_last_line_of_running_job_is_skipped(tmp_path):
    path = write_run(str(tmp_path), lambda e: 10 + e, epochs=3, partial_tail=True)
    run = load_run(str(tmp_path))
    assert run.skipped_partial_line
    its, ap = run.series("bbox/AP")
    assert its == [99.0, 199.0, 299.0]
    assert run.path == path
    assert max(r["iteration"] for r in run.records) == 299


def test_broken_line_in_the_middle_is_an_error_naming_the_line():
    lines = ['{"iteration": 0, "total_loss": 1.0}', '{"iteration": 1, "tot', '{"iteration": 2, "total_loss": 0.5}']
    with pytest.raises(MetricsError, match=r"m.json:2: not valid JSON"):
        parse_metrics_lines(lines, source="m.json")


def test_resumed_run_duplicates_merge_and_later_wins():
    lines = [json.dumps({"iteration": i, "total_loss": 1.0}) for i in (0, 1, 2)]
    lines += [json.dumps({"iteration": 2, "total_loss": 0.25}), json.dumps({"iteration": 2, "bbox/AP": 3.0})]
    records, skipped = parse_metrics_lines(lines)
    assert not skipped
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert records[2] == {"iteration": 2, "total_loss": 0.25, "bbox/AP": 3.0}


def test_nan_values_are_left_out_of_series():
    records, _ = parse_metrics_lines(['{"iteration": 0, "total_loss": NaN}', '{"iteration": 1, "total_loss": 2.0}'])
    from lazydet.analysis.metrics_io import Run

    assert Run("r", "m.json", records).series("total_loss") == ([1.0], [2.0])


def test_missing_file_and_empty_file_errors(tmp_path):
    with pytest.raises(MetricsError, match="has no metrics.json"):
        load_run(str(tmp_path))
    (tmp_path / "metrics.json").write_text("")
    with pytest.raises(MetricsError, match="no metric records"):
        load_run(str(tmp_path))


@pytest.mark.parametrize("ipe", [100, 37])
@pytest.mark.parametrize("integer", [False, True])
def test_iters_per_epoch_inferred_from_epoch_field(tmp_path, ipe, integer):
    write_run(str(tmp_path), lambda e: e, epochs=4, iters_per_epoch=ipe, log_period=1, integer_epoch=integer)
    run = load_run(str(tmp_path))
    assert infer_iters_per_epoch(run) == pytest.approx(ipe)
    epochs = to_epochs(run, run.series("bbox/AP")[0])
    assert epochs == pytest.approx([1, 2, 3, 4])


def test_no_epoch_information_asks_for_iters_per_epoch(tmp_path):
    write_run(str(tmp_path), lambda e: e, epochs=3, log_epoch=False)
    run = load_run(str(tmp_path))
    with pytest.raises(MetricsError, match="--iters-per-epoch"):
        to_epochs(run, [99.0])
    assert to_epochs(run, [99.0], iters_per_epoch=50) == [2.0]
    assert not math.isnan(to_epochs(run, [0.0], 1)[0])
