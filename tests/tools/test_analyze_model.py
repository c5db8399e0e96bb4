"""tools.analyze_model: parameter counts and FLOPs against hand formulas."""
from pathlib import Path

import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from lazydet.config import LazyConfig
from tools import analyze_model

QUICKSTART = str(Path(__file__).resolve().parents[2] / "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")


class _Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_flops_formula():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    analysis = FlopCountAnalysis(_Attention(), (q, k, v))
    analysis.set_op_handle("aten::scaled_dot_product_attention", analyze_model.sdpa_flop_jit)
    assert analysis.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_quickstart_vit_block_flops_and_parameters(capsys):
    cfg = LazyConfig.load(QUICKSTART)
    model = analyze_model.build_model(cfg)
    with torch.no_grad():
        analysis = analyze_model.count_flops(model, (112, 112), batch_size=1)
    net = model.backbone.net
    d, n = net.embed_dim, 1 + (112 // 14) ** 2  # tokens: class token + 8x8 patches
    by_module = analysis.by_module()
    block = "model.backbone.net.vit.blocks.0"
    assert by_module[f"{block}.attn"] == 4 * n * d * d + 2 * n * n * d  # qkv + proj + QK^T + AV
    assert by_module[f"{block}.mlp"] == 8 * n * d * d  # fc1 + fc2 with ratio 4
    assert by_module["model.backbone.net.vit.patch_embed"] == (n - 1) * 3 * 14 * 14 * d

    table = analyze_model.parameter_table(model, max_depth=1)
    total_line = table.splitlines()[2]
    assert total_line.split("|")[1].strip().replace(",", "") == str(sum(p.numel() for p in model.parameters()))


def test_main_prints_table_and_json(capsys):
    result = analyze_model.main(["--config-file", QUICKSTART, "--image-size", "112", "112", "--depth", "1"])
    out = capsys.readouterr().out
    assert "backbone" in out and "transformer" in out and '"gflops"' in out
    assert result["gflops"] > result["gflops_by_module"]["backbone"] > 0
    assert result["parameters"] == result["trainable_parameters"] > 1e6
