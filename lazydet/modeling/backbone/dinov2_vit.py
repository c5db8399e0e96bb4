"""DINOv2 ViT from timm as a detection backbone: one stride-14 feature map for any input size.

The ViT itself is timm's; this wrapper only adds what detection needs: inputs of any size (padded to a
multiple of the patch size, position embeddings interpolated by timm's `dynamic_img_size`), frozen early
blocks, gradient checkpointing, and pretrained weights from the hub or a local file with an actionable
error when neither is available.
"""
from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from typing import Optional

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOv2ViT", "DINOV2_MODELS", "default_weights_path", "MissingWeightsError"]

logger = logging.getLogger(__name__)

DINOV2_MODELS = tuple(
    f"vit_{size}_patch14_{reg}dinov2.lvd142m"
    for size in ("small", "base", "large", "giant")
    for reg in ("", "reg4_")
)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are neither local nor downloadable."""


def default_weights_path(model_name: str) -> str:
    """Where a manually downloaded checkpoint is looked for: `$TORCH_HOME/hub/checkpoints/<name>.safetensors`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", f"{model_name}.safetensors")


def _local_weights(model_name: str, checkpoint_path: Optional[str]) -> Optional[str]:
    if checkpoint_path:
        if not os.path.isfile(checkpoint_path):
            raise MissingWeightsError(
                f"model.backbone.net.checkpoint_path={checkpoint_path!r}: no such file "
                f"(expected a timm or original DINOv2 .safetensors/.pth for {model_name})"
            )
        return checkpoint_path
    default = default_weights_path(model_name)
    for candidate in (default, os.path.splitext(default)[0] + ".pth"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _missing_weights_message(model_name: str, cause: BaseException) -> str:
    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = (cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{model_name}")
    also = f" (or the original {cfg.url})" if cfg is not None and cfg.url else ""
    return (
        f"Cannot get pretrained weights for {model_name!r}: the Hugging Face hub is not reachable "
        f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}). "
        f"On a machine with internet download https://huggingface.co/{repo}/resolve/main/model.safetensors{also} "
        f"and save it as {default_weights_path(model_name)} (or anywhere, then pass "
        f"model.backbone.net.checkpoint_path=/path/to/file; original DINOv2 .pth files work too), "
        f"or train from scratch with model.backbone.net.pretrained=False."
    )


HUB_PROBE_TIMEOUT_S = 3.0  # offline, timm's own download retries the hub for about 50 s before failing


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub can be asked for weights: False when ``HF_HUB_OFFLINE`` is set or when no
    TCP connection to the hub (``$HF_ENDPOINT``, or the ``$HTTPS_PROXY`` in between) opens within ``timeout_s``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HF_ENDPOINT")
           or "https://huggingface.co")
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


def _hub_cache_file(model_name: str) -> Optional[str]:
    """The weights of `model_name` in the local Hugging Face cache (an earlier download), or None."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{model_name}"
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def create_timm_vit(model_name: str, pretrained: bool, checkpoint_path: Optional[str], **kwargs) -> nn.Module:
    """Build the timm ViT; weights from `checkpoint_path`, then the default local file, then the hub (its local
    cache when the hub is not reachable). Raises `MissingWeightsError` (one actionable line) within seconds
    when no weights can be had, e.g. offline without a cached copy."""
    kwargs = dict(num_classes=0, global_pool="", dynamic_img_size=True, **kwargs)
    if checkpoint_path and not pretrained:
        logger.info("checkpoint_path given: loading it although pretrained=False")
        pretrained = True
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    local = _local_weights(model_name, checkpoint_path)
    if local is not None:
        logger.info("Loading %s weights from %s", model_name, local)
        # timm's filter converts original DINOv2 keys and resamples the position embedding.
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=local), **kwargs)
    if not hub_reachable():  # decide in seconds, instead of waiting on timm's retries
        cached = _hub_cache_file(model_name)
        if cached is None:
            raise MissingWeightsError(_missing_weights_message(model_name, ConnectionError(
                f"no connection within {HUB_PROBE_TIMEOUT_S:g} s, or HF_HUB_OFFLINE is set, and no cached copy")))
        logger.info("Hub not reachable: loading %s weights from the hub cache %s", model_name, cached)
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=cached), **kwargs)
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # network, offline mode, missing cache entry
        raise MissingWeightsError(_missing_weights_message(model_name, e)) from e


class DINOv2ViT(nn.Module):
    """A timm DINOv2 ViT returning its last (final-norm) tokens as a `[B, C, H/14, W/14]` map.

    Args:
        model_name: a timm name, e.g. one of `DINOV2_MODELS`; a custom size comes from `embed_dim`,
            `depth`, `num_heads`, ... in `timm_kwargs` (random init only).
        pretrained: load weights (local file or timm hub); never True in tests.
        checkpoint_path: a local timm or original-DINOv2 checkpoint; implies pretrained.
        drop_path_rate: stochastic depth, linearly increasing over the blocks (timm).
        grad_checkpointing: recompute block activations in backward to save memory.
        freeze_blocks: freeze the patch embedding, tokens, position embedding and the first k blocks.
        **timm_kwargs: passed to `timm.create_model` (e.g. img_size, embed_dim, depth, num_heads).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch14_dinov2.lvd142m",
        pretrained: bool = False,
        checkpoint_path: Optional[str] = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        freeze_blocks: int = 0,
        **timm_kwargs,
    ):
        super().__init__()
        self.vit = create_timm_vit(
            model_name, pretrained, checkpoint_path, drop_path_rate=drop_path_rate, **timm_kwargs
        )
        self.model_name = model_name
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.embed_dim = int(self.vit.embed_dim)
        self.num_blocks = len(self.vit.blocks)
        if grad_checkpointing:
            self.vit.set_grad_checkpointing(True)
        if not 0 <= freeze_blocks <= self.num_blocks:
            raise ValueError(
                f"model.backbone.net.freeze_blocks={freeze_blocks}: must be in [0, {self.num_blocks}] for {model_name}"
            )
        self.freeze_blocks = freeze_blocks
        self._freeze(freeze_blocks)

    def _freeze(self, k: int) -> None:
        if k == 0:
            return
        frozen = [self.vit.patch_embed, *self.vit.blocks[:k]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        for name in ("cls_token", "reg_token", "pos_embed"):
            p = getattr(self.vit, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images `[B, 3, H, W]` (normalised) -> `[B, C, ceil(H/14), ceil(W/14)]` (zero-padded bottom/right)."""
        h, w = images.shape[-2:]
        p = self.patch_size
        pad_h, pad_w = (-h) % p, (-w) % p
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        tokens = self.vit.forward_features(images)
        tokens = tokens[:, self.vit.num_prefix_tokens :]
        gh, gw = images.shape[-2] // p, images.shape[-1] // p
        return tokens.transpose(1, 2).reshape(images.shape[0], self.embed_dim, gh, gw)
