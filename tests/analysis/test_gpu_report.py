"""The GPU report on the CPU: its plumbing (caps, failures, results on disk as parts end), its measuring pieces
against independent computations, and the whole report end to end at tiny sizes. CUDA tests run with a GPU."""
import json
import math
import os

import pytest
import torch

from lazydet.analysis import kernel_bench
from lazydet.analysis.gpu_parts import replicate
from lazydet.analysis.gpu_report import TINY_SETTINGS, run_report, settings_for
from lazydet.analysis.part_runner import Part
from lazydet.analysis.random_batches import RandomDetectionBatches, train_image_size, with_random_images
from lazydet.config import LazyConfig, instantiate
from tools import gpu_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO_S = os.path.join(REPO, "projects/dino_dinov2/configs/COCO/dino_dinov2_s_12ep.py")
STANDIN = "tests.analysis.report_parts_standin"


def test_failed_killed_and_overrunning_parts_are_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parts = [Part("boom", f"{STANDIN}:emit_then_fail", 60, {"count": 2}),
             Part("sleepy", f"{STANDIN}:emit_then_sleep", 3, {"seconds": 60}),
             Part("killed", f"{STANDIN}:exit_hard", 60, {"code": 3}),
             Part("reader", f"{STANDIN}:read_report", 60, {"out_dir": str(tmp_path)})]
    report = run_report(TINY_SETTINGS, str(tmp_path), parts=parts, log=lambda m: None)
    boom, sleepy, killed, reader = report["parts"]
    assert (boom["status"], boom["reason"], len(boom["rows"])) == ("failed", "ValueError: planted failure", 2)
    assert sleepy["status"] == "timeout" and sleepy["rows"] == [{"before": "sleep"}]  # kept what it had
    assert 3 <= sleepy["wall_s"] < 30  # killed at its cap, not after its 60 s sleep
    assert killed["status"] == "failed" and killed["reason"] == "exit 3: last words on stderr"
    # the report on disk was current when the last part started: every earlier part with its rows
    assert reader["rows"] == [{"on_disk": [["boom", "failed", 2], ["sleepy", "timeout", 1], ["killed", "failed", 1]]}]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert [p["status"] for p in on_disk["parts"]] == ["failed", "timeout", "failed", "ok"]
    md = (tmp_path / "report.md").read_text()
    assert "**failed**: ValueError: planted failure" in md and "second line" not in md
    assert "**timeout**: stopped at its cap of 3 s" in md
    assert (tmp_path / "report.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "parts" / "sleepy.json").read_text())["status"] == "timeout"


def test_parts_share_one_budget_and_a_part_without_time_left_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # budget 2.5 s = the sum of the caps; the first part overruns its 2 s, leaving < 1 s: the second is skipped
    parts = [Part("eater", f"{STANDIN}:emit_then_sleep", 2, {"seconds": 60}),
             Part("late", f"{STANDIN}:emit_then_sleep", 0.5, {"seconds": 0})]
    states = run_report(TINY_SETTINGS, str(tmp_path), parts=parts, log=lambda m: None)["parts"]
    assert [s["status"] for s in states] == ["timeout", "skipped"]
    assert states[1]["reason"] == "no time left of the report's budget" and states[1]["rows"] == []


def test_level_shapes_come_from_the_recipes_backbone():
    cfg = LazyConfig.load(COCO_S)
    height, width = train_image_size(cfg)
    assert (height, width) == (max(cfg.dataloader.train.mapper.augmentation.min_sizes),
                               cfg.dataloader.train.mapper.augmentation.max_size)
    # independent arithmetic: the ViT pads to its patch (14), the pyramid upsamples x2, keeps, max-pools (floor)
    # and the top block subsamples with stride 2 (ceil)
    gh, gw = math.ceil(height / 14), math.ceil(width / 14)
    expected = [(2 * gh, 2 * gw), (gh, gw), (gh // 2, gw // 2), (math.ceil(gh // 2 / 2), math.ceil(gw // 2 / 2))]
    assert kernel_bench.level_shapes(cfg, 2, height, width) == expected
    sizes = kernel_bench.attention_sizes(cfg)
    assert sizes == {"heads": 8, "points": 4, "head_dim": cfg.model.embed_dim // 8,
                     "decoder_queries": cfg.model.num_queries + 2 * cfg.model.dn_number}


def _small_inputs():
    shapes = [(6, 5), (3, 3)]
    return shapes, kernel_bench.make_inputs(2, shapes, 7, 2, 3, 4, "cpu", seed=1)


def test_numerical_check_measures_a_known_difference(monkeypatch):
    shapes, inputs = _small_inputs()
    pytorch = kernel_bench.sampler("pytorch")
    # 1.5 x the value: output and all three gradients are 1.5 x the reference's (all linear in value)
    fakes = {"scaled": lambda v, s, loc, w: pytorch(1.5 * v, s, loc, w),
             "broken": lambda *a: (_ for _ in ()).throw(TypeError("unexpected keyword argument 'impl'\ndetail"))}
    monkeypatch.setattr(kernel_bench, "sampler", lambda impl: fakes.get(impl) or pytorch)
    reference = kernel_bench.forward_backward(pytorch, shapes, inputs, torch.float32)
    row = kernel_bench.check_row("decoder", "scaled", "fp32", shapes, inputs, reference)
    for key in ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights"):
        assert row[key] == pytest.approx(0.5 * row[key + "_scale"], rel=1e-5) and row[key] > 0
    same = kernel_bench.check_row("decoder", "pytorch", "fp32", shapes, inputs, reference)
    assert same["output"] == 0 and same["grad_value"] == 0
    broken = kernel_bench.measure_row("decoder", "broken", "fp32", shapes, inputs, 1, 0)
    assert broken["status"] == "failed" and broken["reason"] == "TypeError: unexpected keyword argument 'impl'"
    triton_on_cpu = kernel_bench.measure_row("decoder", "triton", "fp32", shapes, inputs, 1, 0)
    assert triton_on_cpu["status"] == "skipped" and "CUDA only" in triton_on_cpu["reason"]


def test_random_batches_have_the_loader_format_and_repeat_with_the_seed():
    batches = iter(RandomDetectionBatches(total_batch_size=3, height=20, width=30, num_classes=5, seed=4))
    first, second = next(batches), next(batches)
    assert first["images"].shape == (3, 3, 20, 30) and first["images"].dtype == torch.uint8
    assert first["pixel_mask"].all() and first["pixel_mask"].shape == (3, 20, 30)
    ids = [t["image_id"] for t in first["targets"] + second["targets"]]
    assert ids == list(range(6))
    for t in first["targets"]:
        cx, cy, w, h = t["boxes"].unbind(-1)
        assert ((cx - w / 2) >= 0).all() and ((cx + w / 2) <= 1).all() and ((cy - h / 2) >= 0).all()
        assert ((cy + h / 2) <= 1).all() and t["labels"].max() < 5 and t["size"].tolist() == [20, 30]
    again = next(iter(RandomDetectionBatches(total_batch_size=3, height=20, width=30, num_classes=5, seed=4)))
    assert torch.equal(again["images"], first["images"])


def test_recipe_on_random_images_keeps_the_model_and_drops_data_and_weights():
    cfg = with_random_images(LazyConfig.load(COCO_S))
    assert cfg.model.backbone.net.pretrained is False
    assert cfg.model.backbone.net.model_name == "vit_small_patch14_dinov2.lvd142m"  # the recipe's own
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert batch["images"].shape == (16, 3, 800, 1333)  # the recipe's batch, its largest training image


def test_replicated_evaluation_set_scores_the_same_ap():
    from lazydet.evaluation import evaluate_coco_detections

    gt = {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "images": [{"id": 0, "height": 100, "width": 100}, {"id": 1, "height": 100, "width": 100}],
          "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 40, 20, 30], "area": 600, "iscrowd": 0}]}
    dets = [{"image_id": 0, "category_id": 1, "bbox": [12, 10, 30, 28], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 0.8},
            {"image_id": 1, "category_id": 2, "bbox": [52, 41, 20, 30], "score": 0.4}]
    big_gt, big_dets = replicate(gt, dets, 3)
    assert len(big_gt["images"]) == 6 and len({a["id"] for a in big_gt["annotations"]}) == 6 and len(big_dets) == 9
    ap = evaluate_coco_detections(gt, dets)["bbox/AP"]
    assert 0 < ap < 100 and evaluate_coco_detections(big_gt, big_dets)["bbox/AP"] == pytest.approx(ap)


def test_tool_refuses_an_earlier_report_and_bad_caps(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(SystemExit, match="already holds a report"):
        gpu_report.main(["--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        gpu_report.parse_args(["--out", "x", "--cap", "kernel"])
    with pytest.raises(ValueError, match="unknown part"):
        settings_for(True, caps={"kernal": 5})
    bad = tmp_path / "bad_recipe.py"
    bad.write_text("train = 1 +\n")
    with pytest.raises(SystemExit, match=r"^error: .*bad_recipe.py"):
        gpu_report.main(["--tiny", "--config-file", str(bad), "--out", str(tmp_path / "new")])


@pytest.mark.slow
def test_tiny_report_runs_every_part_end_to_end_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "report"
    assert gpu_report.main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == ["kernel", "table2", "fp16", "inference"] and all(p["status"] == "ok" for p in parts.values())
    timing = [r for r in parts["kernel"]["rows"] if r["kind"] == "timing"]
    assert {(r["impl"], r["status"]) for r in timing if r["impl"] != "autograd"} == {
        ("pytorch", "ok"), ("triton", "skipped")}
    # main's plain-autograd path is timed where the kernel's branch provides it, else a one-line failure
    assert all(r["status"] == "ok" or "\n" not in r["reason"] for r in timing if r["impl"] == "autograd")
    assert all(0 < r["ms_min"] <= r["ms_median"] <= r["ms_max"] for r in timing if r["status"] == "ok")
    bf16 = [r for r in parts["kernel"]["rows"] if r["kind"] == "check" and r["impl"] == "pytorch"]
    assert bf16 and all(0 < r["output"] < 0.1 * r["output_scale"] for r in bf16)  # bf16 rounding, not garbage
    table = {r["precision"]: r for r in parts["table2"]["rows"]}
    assert table["fp32"]["status"] == "ok" and table["fp32"]["time_median"] > 0 and table["fp16"]["status"] == "skipped"
    steps = parts["fp16"]["rows"]
    assert len(steps) == TINY_SETTINGS.fp16_steps and all(s["finite"] for s in steps)
    # GradScaler: starts at 2**16, halves exactly on each skipped step, grows only after 2000 good ones
    assert steps[-1]["scale"] == 2.0 ** 16 * 0.5 ** sum(s["skipped"] for s in steps)
    infer = parts["inference"]["rows"]
    assert [r["images_per_s"] > 0 for r in infer if r["kind"] == "inference"] == [True, True]
    evals = [r for r in infer if r["kind"] == "coco_eval"]
    assert [r["images"] for r in evals] == [TINY_SETTINGS.eval_images, TINY_SETTINGS.eval_images * TINY_SETTINGS.eval_copies]
    md = (out / "report.md").read_text()
    assert md in capsys.readouterr().out and "| Backbone | Precision | Batch Size | Time per Iteration |" in md
    for name in ("report.png", "table2/chart.png", "table2/results.csv", "recipe.yaml", "parts/kernel.json"):
        assert (out / name).stat().st_size > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_part_on_cuda_times_measures_memory_and_checks(tmp_path):
    from lazydet.analysis.part_runner import PartRows

    rows = PartRows(str(tmp_path / "kernel.json"), "kernel")
    kernel_bench.run(rows, COCO_S, "cuda", batch_size=1, image_size=[224, 280], iters=2, warmup=1)
    got = rows.state["rows"]
    pytorch = [r for r in got if r["kind"] == "timing" and r["impl"] == "pytorch"]
    assert pytorch and all(r["status"] == "ok" and r["peak_mib"] > 0 for r in pytorch)
    triton = [r for r in got if r["impl"] == "triton"]
    assert triton and all(r["status"] == "ok" or "\n" not in r["reason"] for r in triton)
    for r in got:
        if r["kind"] == "check" and r["status"] == "ok" and r["precision"] == "fp32":
            assert r["output"] < 1e-3 * max(1.0, r["output_scale"])


def test_goals_are_judged_from_the_figures():
    from lazydet.analysis.gpu_report_render import kernel_sections, table2_sections

    def timing(impl, ms, mib, precision="fp32"):
        return {"kind": "timing", "case": "encoder", "queries": 10, "precision": precision, "impl": impl,
                "status": "ok", "reason": "", "ms_median": ms, "ms_min": ms, "ms_max": ms, "peak_mib": mib}

    rows = [timing("pytorch", 40.0, 900.0), timing("autograd", 20.0, 1800.0), timing("triton", 8.0, 300.0),
            timing("pytorch", 10.0, 100.0, "bf16"), timing("triton", 5.0, 10.0, "bf16")]
    lines = kernel_sections(rows)
    fp32 = next(ln for ln in lines if "| fp32 | triton |" in ln)
    assert "5.00x vs pytorch; 2.50x vs autograd" in fp32 and "3.00x vs pytorch; 6.00x vs autograd" in fp32
    assert "met vs pytorch; not met vs autograd" in fp32  # 2.5x faster misses the 3x goal
    bf16 = next(ln for ln in lines if "| bf16 | triton |" in ln)
    assert "2.00x vs pytorch |" in bf16 and "not met vs pytorch" in bf16
    cell = {"backbone": "vit_base_patch14_dinov2.lvd142m", "precision": "bf16", "batch_size": 2, "status": "ok",
            "time_median": 0.19, "time_min": 0.18, "time_max": 0.2, "iters": 10, "memory_mib": 5800.0,
            "reserved_mib": 6500.0, "memory_kind": "CUDA allocated"}
    assert "0.190 s, 5800 MiB -> **not met**" in "\n".join(table2_sections([cell]))  # 6 GB = 5722 MiB
    assert "**met**" in "\n".join(table2_sections([dict(cell, memory_mib=5000.0)]))


def test_stopping_the_report_stops_the_running_part_and_its_children(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = ("from lazydet.analysis.part_runner import Part, run_parts; "
              f"run_parts([Part('slow', '{STANDIN}:sleep_with_child', 120, {{'seconds': 120}})], {str(tmp_path)!r})")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    part_file = tmp_path / "parts" / "slow.json"
    for _ in range(600):  # the part has started its grandchild and said so
        state = json.loads(part_file.read_text()) if part_file.exists() else {}
        if state.get("rows"):
            break
        time.sleep(0.1)
    pids = state["rows"][0]["pids"]
    parent.send_signal(signal.SIGTERM)  # what `timeout` sends
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    # neither the part nor what it started outlives the report (they had their own session); the orphaned
    # grandchild may linger as a zombie until init reaps it, which is not running
    assert [_running(pid) for pid in pids] == [False, False]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
