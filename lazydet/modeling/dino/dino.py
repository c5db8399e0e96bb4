"""DINO: DETR with Improved deNoising anchOr boxes (Zhang et al., 2022), on any multi-level backbone.

``model(batch)`` in training returns the weighted losses, in eval the detections (ARCHITECTURE.md).
One forward, top to bottom:
  normalise -> backbone -> 1x1 conv + GroupNorm per level -> sine positions
  -> (training) contrastive denoising queries -> transformer (encoder, top-k proposals, decoder, whose
  layers predict through the class / box heads) -> split denoising / matching predictions
  -> criterion (training) or post-processing (eval).
"""
import math
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..layers import PositionEmbeddingSine
from .criterion import DINOCriterion, DINOOutputs
from .denoising import prepare_contrastive_denoising, split_predictions
from .heads import DINOHeads, Predictions
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
    """The detector. ``forward(batch)`` takes ``images`` uint8 ``[B, 3, H, W]``, ``pixel_mask`` bool
    ``[B, H, W]`` (True = real pixel) and, for training or scored eval, ``targets`` (per image ``labels [n]``,
    ``boxes [n, 4]`` cxcywh in [0, 1], ``size``, ``orig_size``). Training returns the criterion's dict of
    weighted scalar losses; eval returns per image ``{boxes [k, 4] xyxy in original pixels, scores [k],
    labels [k]}``.

    Owns the backbone, the input projection, the transformer, the prediction heads (``heads``), the
    matching queries' content (``tgt_embed``), the label embedding of the denoising queries (``label_enc``)
    and the criterion.
    """

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
        self.heads = DINOHeads(embed_dim, num_classes, transformer.decoder.num_layers)

    def normalize(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 ``[B, 3, H, W]`` -> float ``(x - mean) / std``, with the padding set to 0."""
        images = (images.float() - self.pixel_mean) / self.pixel_std
        return images.masked_fill(~pixel_mask[:, None], 0.0)

    def is_training_only_loss(self, name: str) -> bool:
        """Whether the loss term ``name`` of ``forward`` (training) exists only in training (the denoising
        terms, see ``DINOCriterion.is_training_only_loss``); ``diagnostics.val_loss`` asks it."""
        return self.criterion.is_training_only_loss(name)

    def forward(self, batch: dict):
        """See the class docstring: losses (training) or detections (eval)."""
        images, pixel_mask = batch["images"], batch["pixel_mask"]
        targets = batch.get("targets")
        features, masks = self.backbone(self.normalize(images, pixel_mask), pixel_mask)
        features = [proj(f) for proj, f in zip(self.input_proj, features)]
        pos_embeds = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        num_queries = min(self.num_queries, sum(f.shape[-2] * f.shape[-1] for f in features))

        denoising = None
        if self.training:
            denoising = prepare_contrastive_denoising(targets, self.dn_number, self.label_noise_ratio,
                                                      self.box_noise_scale, self.num_classes, self.label_enc,
                                                      num_queries)
        out = self.transformer(features, masks, pos_embeds, self.tgt_embed.weight[:num_queries], self.heads,
                               denoising)
        # label_enc takes part in every forward, also with dn_number=0, so that DDP with
        # find_unused_parameters=False sees a gradient for it: an exactly-zero term (as DINO and detrex).
        decoded = Predictions(out.decoder.logits + self.label_enc.weight[0, 0] * 0.0, out.decoder.boxes)
        matching, denoised = split_predictions(decoded, denoising)
        if not self.training:
            return self.inference(matching.layer(-1), images, pixel_mask, targets)
        layers = matching if self.aux_loss else Predictions(matching.logits[-1:], matching.boxes[-1:])
        outputs = DINOOutputs(layers=layers, encoder=out.encoder, denoising=denoised,
                              dn_meta=denoising.meta if denoising is not None else None)
        return self.criterion(outputs, targets)

    def inference(self, predictions: Predictions, images: torch.Tensor, pixel_mask: torch.Tensor,
                  targets: Optional[List[dict]]) -> List[dict]:
        """The last layer's matching ``predictions`` (``[B, K, .]``) -> detections per image, in the original
        pixels of ``targets[i]["orig_size"]`` (or of the pixel mask's real size when there are no targets)."""
        if targets is not None:
            sizes = [t["size"] for t in targets]
            orig_sizes = [t.get("orig_size", t["size"]) for t in targets]
        else:  # images only (e.g. a demo): the real size comes from the pixel mask
            sizes = [(int(m[:, 0].sum()), int(m[0, :].sum())) for m in pixel_mask]
            orig_sizes = sizes
        return post_process(predictions.logits, predictions.boxes, sizes, orig_sizes,
                            self.select_box_nums_for_evaluation)
