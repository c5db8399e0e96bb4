"""tools/diagnose on metrics.json files with known behaviour (healthy, diverging, still being written)."""
import json

import numpy as np

from tools.diagnose import diagnose, main


def write_metrics(path, losses, period=20, extra=None, partial=False):
    lines = []
    for i, v in enumerate(losses):
        rec = {"iteration": (i + 1) * period - 1, "total_loss": float(v), "lr": 1e-4, "grad_norm": 1.0}
        rec.update((extra or {}).get(i, {}))
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n" + ('{"iteration": 99999, "total_lo' if partial else "")
    path.joinpath("metrics.json").write_text(text)


def test_healthy_run_is_clean(tmp_path, capsys):
    x = np.arange(200)
    write_metrics(tmp_path, 20 * np.exp(-x / 60) + 5, partial=True)
    report = diagnose(str(tmp_path))
    assert report.findings == {}
    assert "half-written last line" in report.sections["Run"]
    assert main([str(tmp_path)]) == 0 and "No problems found." in capsys.readouterr().out


def test_diverging_run_and_eval_at_chance(tmp_path, capsys):
    loss = np.concatenate([np.linspace(20, 8, 100), np.linspace(8, 40, 100)])
    evals = {i: {"bbox/AP": 0.01} for i in (50, 100, 150)}
    write_metrics(tmp_path, loss, extra=evals)
    report = diagnose(str(tmp_path))
    assert {"divergence", "metric_at_chance"} <= set(report.findings)
    assert main([str(tmp_path), "--write"]) == 1
    out = capsys.readouterr().out
    assert "`divergence`" in out and (tmp_path / "doctor_report_offline.md").is_file()


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diagnose: cannot read metrics") and "\n" not in err
