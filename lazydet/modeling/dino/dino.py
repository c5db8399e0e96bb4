"""DINO: DETR with Improved deNoising anchOr boxes (Zhang et al., 2022), on any multi-level backbone.

``model(batch)`` in training returns the weighted losses, in eval the detections (ARCHITECTURE.md).
One forward, top to bottom:
  normalise -> backbone -> 1x1 conv + GroupNorm per level -> sine positions
  -> (training) contrastive denoising queries -> transformer (encoder, top-k proposals, decoder)
  -> class / box heads on every decoder layer -> criterion or post-processing.
"""
import copy
import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..layers import MLP, PositionEmbeddingSine
from .criterion import DINOCriterion
from .denoising import prepare_contrastive_denoising
from .postprocess import post_process
from .transformer import DINOTransformer


def default_input_proj(in_channels: int, embed_dim: int, num_levels: int) -> nn.ModuleList:
    """detrex's ChannelMapper: one 1x1 conv + GroupNorm(32) per level."""
    projections = nn.ModuleList()
    for _ in range(num_levels):
        conv = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        nn.init.xavier_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
        projections.append(nn.Sequential(conv, nn.GroupNorm(math.gcd(32, embed_dim), embed_dim)))
    return projections


class DINO(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        transformer: DINOTransformer,
        criterion: DINOCriterion,
        position_embedding: Optional[nn.Module] = None,
        embed_dim: int = 256,
        num_classes: int = 80,
        num_queries: int = 900,
        aux_loss: bool = True,
        dn_number: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        pixel_mean: Sequence[float] = (123.675, 116.280, 103.530),
        pixel_std: Sequence[float] = (58.395, 57.120, 57.375),
        select_box_nums_for_evaluation: int = 300,
        input_proj: Optional[nn.ModuleList] = None,
    ):
        super().__init__()
        if transformer.embed_dim != embed_dim:
            raise ValueError(f"DINO: embed_dim={embed_dim} but the transformer's is {transformer.embed_dim}; "
                             f"set model.transformer.encoder/decoder.embed_dim to the same value")
        if getattr(backbone, "num_levels", transformer.num_feature_levels) != transformer.num_feature_levels:
            raise ValueError(f"DINO: backbone.num_levels={backbone.num_levels} but "
                             f"model.transformer.num_feature_levels={transformer.num_feature_levels}")
        pos_feats = getattr(position_embedding, "num_pos_feats", embed_dim // 2)
        if 2 * pos_feats != embed_dim:
            raise ValueError(f"DINO: model.position_embedding.num_pos_feats={pos_feats} must be embed_dim / 2 = "
                             f"{embed_dim // 2}")
        self.backbone, self.transformer, self.criterion = backbone, transformer, criterion
        self.position_embedding = position_embedding or PositionEmbeddingSine(embed_dim // 2)
        self.input_proj = input_proj if input_proj is not None else default_input_proj(
            backbone.out_channels, embed_dim, transformer.num_feature_levels)
        self.embed_dim, self.num_classes, self.num_queries = embed_dim, num_classes, num_queries
        self.aux_loss = aux_loss
        self.dn_number, self.label_noise_ratio, self.box_noise_scale = dn_number, label_noise_ratio, box_noise_scale
        self.select_box_nums_for_evaluation = select_box_nums_for_evaluation
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)

        self.tgt_embed = nn.Embedding(num_queries, embed_dim)  # learned content of the matching queries
        self.label_enc = nn.Embedding(num_classes, embed_dim)  # content of the denoising queries
        nn.init.xavier_uniform_(self.tgt_embed.weight)
        # One class and one box head per decoder layer, plus one for the encoder proposals (last).
        class_head = nn.Linear(embed_dim, num_classes)
        nn.init.constant_(class_head.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        box_head = MLP(embed_dim, embed_dim, 4, 3)
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        num_heads = transformer.decoder.num_layers + 1
        self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_heads))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_heads))

    def normalize(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 -> (x - mean) / std, with the padding set to 0."""
        images = (images.float() - self.pixel_mean) / self.pixel_std
        return images.masked_fill(~pixel_mask[:, None], 0.0)

    def forward(self, batch: dict):
        images, pixel_mask = batch["images"], batch["pixel_mask"]
        targets = batch.get("targets")
        features, masks = self.backbone(self.normalize(images, pixel_mask), pixel_mask)
        features = [proj(f) for proj, f in zip(self.input_proj, features)]
        pos_embeds = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        num_queries = min(self.num_queries, sum(f.shape[-2] * f.shape[-1] for f in features))

        dn = None
        if self.training and self.dn_number > 0:
            dn = prepare_contrastive_denoising(targets, self.dn_number, self.label_noise_ratio,
                                               self.box_noise_scale, self.num_classes, self.label_enc, num_queries)
        dn_content, dn_boxes, attn_mask, dn_meta = dn if dn is not None else (None, None, None, None)
        out = self.transformer(features, masks, pos_embeds, self.tgt_embed.weight[:num_queries],
                               self.class_embed, self.bbox_embed, dn_content, dn_boxes, attn_mask)

        logits = torch.stack([head(h) for head, h in zip(self.class_embed, out["hidden"])])  # [layers, B, T, K]
        boxes = out["boxes"]
        num_dn = dn_meta.num_queries if dn_meta is not None else 0
        outputs = self.prediction_sets(logits[:, :, num_dn:], boxes[:, :, num_dn:])
        if not self.training:
            return self.inference(outputs, images, pixel_mask, targets)

        outputs["enc_outputs"] = {"pred_logits": out["enc_logits"], "pred_boxes": out["enc_boxes"]}
        if dn_meta is not None:
            outputs["dn_outputs"] = [{"pred_logits": l, "pred_boxes": b}
                                     for l, b in zip(logits[:, :, :num_dn], boxes[:, :, :num_dn])]
        elif self.dn_number > 0:  # no box in the batch: zero dn losses that still touch label_enc (DDP)
            outputs["dn_outputs"] = [{"pred_logits": self.label_enc.weight}] * len(logits)
        outputs["dn_meta"] = dn_meta
        return self.criterion(outputs, targets)

    def prediction_sets(self, logits: torch.Tensor, boxes: torch.Tensor) -> Dict[str, object]:
        outputs = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            outputs["aux_outputs"] = [{"pred_logits": l, "pred_boxes": b} for l, b in zip(logits[:-1], boxes[:-1])]
        return outputs

    def inference(self, outputs: dict, images: torch.Tensor, pixel_mask: torch.Tensor,
                  targets: Optional[List[dict]]) -> List[dict]:
        if targets is not None:
            sizes = [t["size"] for t in targets]
            orig_sizes = [t.get("orig_size", t["size"]) for t in targets]
        else:  # images only (e.g. a demo): the real size comes from the pixel mask
            sizes = [(int(m[:, 0].sum()), int(m[0, :].sum())) for m in pixel_mask]
            orig_sizes = sizes
        return post_process(outputs["pred_logits"], outputs["pred_boxes"], sizes, orig_sizes,
                            self.select_box_nums_for_evaluation)
