"""DINOv2ViT against timm's own fixed-size ViT, freezing, checkpointing, and weight loading.

All models are tiny custom DINOv2-shaped ViTs (random init); nothing is downloaded.
"""
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

from lazydet.modeling.backbone import DINOV2_MODELS, DINOv2ViT, MissingWeightsError

TINY = dict(embed_dim=48, depth=2, num_heads=3, img_size=70)  # native grid 5x5
NAMES = ["vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m"]


def _tiny(name=NAMES[0], **kw):
    torch.manual_seed(0)
    return DINOv2ViT(name, **TINY, **kw).eval()


def _fixed_size_timm(name, wrapper, img_size):
    """timm's ViT built for exactly `img_size`, with the wrapper's weights and a position embedding
    resized here with F.interpolate (bicubic, antialias as timm and DINOv2 do), not timm's helper."""
    ref = timm.create_model(name, num_classes=0, global_pool="", **dict(TINY, img_size=img_size)).eval()
    state = dict(wrapper.vit.state_dict())
    pos = state["pos_embed"]
    n_prefix = 0 if ref.no_embed_class else ref.num_prefix_tokens
    prefix, grid = pos[:, :n_prefix], pos[:, n_prefix:]
    gh, gw = img_size[0] // 14, img_size[1] // 14
    grid = grid.reshape(1, 5, 5, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=True)
    state["pos_embed"] = torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)
    ref.load_state_dict(state)
    return ref


def _as_map(tokens, n_prefix, gh, gw):
    return tokens[:, n_prefix:].transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)


def test_model_names_are_timm_models():
    available = set(timm.list_models("*dinov2*", pretrained=True))
    assert set(DINOV2_MODELS) <= available


@pytest.mark.parametrize("name", NAMES)
def test_native_size_matches_timm_forward(name):
    net = _tiny(name)
    ref = timm.create_model(name, num_classes=0, global_pool="", **TINY).eval()
    ref.load_state_dict(net.vit.state_dict())
    x = torch.randn(2, 3, 70, 70)
    with torch.no_grad():
        out = net(x)
        expected = _as_map(ref.forward_features(x), ref.num_prefix_tokens, 5, 5)
    assert out.shape == (2, 48, 5, 5)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", [(100, 130), (98, 141), (71, 84)])
def test_any_size_pads_and_interpolates_position_embedding(name, hw):
    net = _tiny(name)
    h, w = hw
    ph, pw = -(-h // 14) * 14, -(-w // 14) * 14
    ref = _fixed_size_timm(name, net, (ph, pw))
    x = torch.randn(1, 3, h, w)
    padded = torch.zeros(1, 3, ph, pw)
    padded[..., :h, :w] = x
    with torch.no_grad():
        out = net(x)
        expected = _as_map(ref.forward_features(padded), ref.num_prefix_tokens, ph // 14, pw // 14)
    assert out.shape == (1, 48, ph // 14, pw // 14)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_freeze_blocks_freezes_embeddings_and_first_blocks():
    net = _tiny(freeze_blocks=1).train()
    frozen_prefixes = ("vit.patch_embed.", "vit.cls_token", "vit.pos_embed", "vit.blocks.0.")
    net(torch.randn(1, 3, 56, 70)).square().mean().backward()
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("vit.blocks.1.") for n in names)
    for n, p in net.named_parameters():
        if n.startswith(frozen_prefixes):
            assert not p.requires_grad and p.grad is None, n
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n


def test_freeze_blocks_out_of_range_is_one_clear_error():
    with pytest.raises(ValueError, match=r"model\.backbone\.net\.freeze_blocks=3.*\[0, 2\]"):
        _tiny(freeze_blocks=3)


def test_grad_checkpointing_same_output_and_grads_and_recomputes():
    plain, ckpt = _tiny().train(), _tiny(grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = {"n": 0}
    # a pre-hook: torch stops the recomputation early, before a block's forward hook would run
    ckpt.vit.blocks[0].register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    x = torch.randn(2, 3, 84, 56)
    outs = []
    for net in (plain, ckpt):
        out = net(x)
        out.pow(2).mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    assert calls["n"] == 2, "block 0 should run again in backward (recomputation)"
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_drop_path_is_active_in_training_only():
    net = _tiny(drop_path_rate=0.5).train()
    x = torch.randn(1, 3, 70, 70)
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    assert not torch.allclose(a, b)
    net.eval()
    torch.testing.assert_close(net(x), net(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_loads_local_checkpoint(tmp_path, suffix):
    src = _tiny()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, str(path))
    else:
        torch.save(src.vit.state_dict(), path)
    torch.manual_seed(123)  # a different random init, overwritten by the file
    loaded = DINOv2ViT(NAMES[0], checkpoint_path=str(path), **TINY).eval()
    x = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))


def test_default_local_file_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    src = _tiny()
    os.makedirs(tmp_path / "checkpoints")
    torch.save(src.vit.state_dict(), tmp_path / "checkpoints" / f"{NAMES[0]}.pth")
    loaded = DINOv2ViT(NAMES[0], pretrained=True, **TINY).eval()
    torch.testing.assert_close(loaded.vit.pos_embed, src.vit.pos_embed)


def test_missing_checkpoint_path_names_the_key_and_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(MissingWeightsError, match=r"model\.backbone\.net\.checkpoint_path=.*nope\.pth.*no such file"):
        DINOv2ViT(NAMES[0], checkpoint_path=str(missing), **TINY)


def test_offline_pretrained_error_says_which_file_to_put_where(tmp_path):
    """A fresh process with the hub offline and empty caches: one actionable error, no download."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    code = (
        "from lazydet.modeling.backbone import DINOv2ViT, MissingWeightsError\n"
        "try:\n    DINOv2ViT('vit_base_patch14_dinov2.lvd142m', pretrained=True)\n"
        "except MissingWeightsError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    msg = out.stdout
    expected_file = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints", "vit_base_patch14_dinov2.lvd142m.safetensors")
    assert expected_file in msg, out.stdout + out.stderr
    assert "huggingface.co/timm/vit_base_patch14_dinov2.lvd142m" in msg
    assert "model.backbone.net.checkpoint_path=" in msg


def _unreachable_hub(monkeypatch, tmp_path):
    """No network (every TCP connect fails), empty torch and HF caches, and a spy on timm's hub download."""
    import huggingface_hub.constants
    import socket

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_calls = []
    create = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        if pretrained and "pretrained_cfg_overlay" not in kwargs:
            hub_calls.append(name)  # a download attempt: what waited ~50 s offline
        return create(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    return hub_calls


def test_unreachable_hub_fails_at_once_with_the_weights_message(tmp_path, monkeypatch):
    hub_calls = _unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError, match=r"no connection within 3 s.*\. On a machine with internet download "
                                                  r"https://huggingface\.co/timm/vit_small_patch14_dinov2"):
        DINOv2ViT(NAMES[0], pretrained=True, **TINY)
    assert hub_calls == []  # timm never asked the hub (and never retried it)


def test_unreachable_hub_loads_an_earlier_download_from_the_hub_cache(tmp_path, monkeypatch):
    hub_calls = _unreachable_hub(monkeypatch, tmp_path)
    from safetensors.torch import save_file

    src = _tiny()
    snapshot = tmp_path / "hf" / f"models--timm--{NAMES[0]}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hf" / f"models--timm--{NAMES[0]}" / "refs").mkdir()
    (tmp_path / "hf" / f"models--timm--{NAMES[0]}" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, str(snapshot / "model.safetensors"))
    torch.manual_seed(321)
    loaded = DINOv2ViT(NAMES[0], pretrained=True, **TINY)
    torch.testing.assert_close(loaded.vit.pos_embed, src.vit.pos_embed)
    assert hub_calls == []


def test_hf_hub_offline_means_unreachable_without_a_connection_attempt(monkeypatch):
    import socket

    from lazydet.modeling.backbone.dinov2_vit import hub_reachable

    def fail(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE=1 must not try the network")

    monkeypatch.setattr(socket, "create_connection", fail)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
