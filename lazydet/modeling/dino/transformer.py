"""DINO's deformable transformer: encoder, two-stage query selection, decoder with box refinement.

Read top to bottom:
1. ``DINOTransformer.forward`` flattens the multi-scale features, adds level embeddings, runs the
   encoder (deformable self-attention over all levels).
2. Mixed query selection: every encoder token proposes a box (a fixed-size anchor at its position plus a
   predicted offset); the top-k by class score become the decoder's reference boxes, while the content
   queries are learned embeddings (passed in by the detector).
3. Denoising queries (training only) go first (``DenoisingQueries.prepend_to``); an attention mask keeps
   the groups apart.
4. The decoder refines the boxes layer by layer (``box = sigmoid(delta + logit(previous box))``), as detrex and
   DINO do: the next reference from the layer's un-normed output (detached), the predictions from its normed
   output. With look-forward-twice, layer i's predicted box is refined from layer i-1's refined box with its
   gradient; without, from the detached one.

All reference boxes are (cx, cy, w, h) in [0, 1] of the *unpadded* image; they are multiplied by the
per-level valid ratios (real size / padded size) before sampling the padded feature maps.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..layers import MLP, MultiScaleDeformableAttention, get_sine_pos_embed, inverse_sigmoid
from .denoising import DenoisingQueries
from .heads import DINOHeads, Predictions


@dataclass
class TransformerOutput:
    """What ``DINOTransformer`` returns.

    ``decoder``: predictions of every decoder layer for all T = P + K queries (P denoising first, then K
    matching): logits ``[num_layers, B, T, num_classes]``, boxes ``[num_layers, B, T, 4]``.
    ``encoder``: the K selected encoder proposals: logits ``[B, K, num_classes]``, boxes ``[B, K, 4]``.
    """
    decoder: Predictions
    encoder: Predictions


def feed_forward(embed_dim: int, feedforward_dim: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> dropout -> Linear -> dropout: ``[..., embed_dim] -> [..., embed_dim]``."""
    return nn.Sequential(nn.Linear(embed_dim, feedforward_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(feedforward_dim, embed_dim), nn.Dropout(dropout))


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then FFN (post-norm)."""

    def __init__(self, embed_dim, num_heads, feedforward_dim, dropout, num_levels, num_points, impl="auto"):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(embed_dim, num_heads, num_levels, num_points, impl)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = feed_forward(embed_dim, feedforward_dim, dropout)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, src, pos, reference_points, spatial_shapes, valid):
        """Tokens ``src``/``pos [B, N, C]``, points ``[B, N, L, 2]``, ``valid [B, N]`` -> ``[B, N, C]``."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, valid)
        src = self.norm1(src + self.dropout(attended))
        return self.norm2(src + self.ffn(src))


class DecoderLayer(nn.Module):
    """Self-attention among queries (masked for denoising), deformable cross-attention, FFN (post-norm)."""

    def __init__(self, embed_dim, num_heads, feedforward_dim, dropout, num_levels, num_points, impl="auto"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn = MultiScaleDeformableAttention(embed_dim, num_heads, num_levels, num_points, impl)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = feed_forward(embed_dim, feedforward_dim, dropout)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, memory_valid, attn_mask):
        """Queries ``tgt``/``query_pos [B, T, C]``, boxes ``reference_points [B, T, L, 4]``, ``memory [B, N, C]``,
        ``memory_valid [B, N]``, ``attn_mask [T, T]`` (True = blocked) or None -> un-normed-by-the-decoder
        output ``[B, T, C]`` (each sub-layer is post-normed)."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, memory_valid)
        tgt = self.norm2(tgt + self.dropout(attended))
        return self.norm3(tgt + self.ffn(tgt))


class DINOTransformerEncoder(nn.Module):
    """``num_layers`` encoder layers over the flattened multi-scale tokens."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, feedforward_dim: int = 2048,
                 dropout: float = 0.0, num_layers: int = 6, num_feature_levels: int = 4, num_points: int = 4,
                 impl: str = "auto"):
        super().__init__()
        self.embed_dim, self.num_feature_levels = embed_dim, num_feature_levels
        self.layers = nn.ModuleList(  # impl: deformable attention core, see MultiScaleDeformableAttention
            EncoderLayer(embed_dim, num_heads, feedforward_dim, dropout, num_feature_levels, num_points, impl)
            for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes, valid_ratios: torch.Tensor) -> torch.Tensor:
        """Pixel centres of every level, normalised to the real image, then mapped to every level's
        padded map: [B, Nv, L, 2] (x, y)."""
        device = valid_ratios.device
        points = []
        for level, (h, w) in enumerate(spatial_shapes):
            ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                                    torch.arange(w, device=device, dtype=torch.float32) + 0.5, indexing="ij")
            ys = ys.reshape(1, -1) / (valid_ratios[:, None, level, 1] * h)
            xs = xs.reshape(1, -1) / (valid_ratios[:, None, level, 0] * w)
            points.append(torch.stack((xs, ys), -1))
        points = torch.cat(points, 1)
        return points[:, :, None] * valid_ratios[:, None]

    def forward(self, src, pos, spatial_shapes, valid_ratios, valid):
        """Tokens ``src``/``pos [B, N, C]`` of levels ``spatial_shapes`` [(h, w)], ``valid_ratios [B, L, 2]``,
        ``valid [B, N]`` (True = real pixel) -> memory ``[B, N, C]``."""
        reference_points = self.reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, valid)
        return src


class DINOTransformerDecoder(nn.Module):
    """``num_layers`` decoder layers; each refines the reference boxes through the prediction heads."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, feedforward_dim: int = 2048,
                 dropout: float = 0.0, num_layers: int = 6, num_feature_levels: int = 4, num_points: int = 4,
                 look_forward_twice: bool = True, impl: str = "auto"):
        super().__init__()
        self.embed_dim, self.num_layers, self.look_forward_twice = embed_dim, num_layers, look_forward_twice
        self.layers = nn.ModuleList(  # impl: deformable attention core, see MultiScaleDeformableAttention
            DecoderLayer(embed_dim, num_heads, feedforward_dim, dropout, num_feature_levels, num_points, impl)
            for _ in range(num_layers))
        self.ref_point_head = MLP(2 * embed_dim, embed_dim, embed_dim, 2)  # box sine embedding -> query_pos
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, tgt, reference_boxes, memory, spatial_shapes, valid_ratios, memory_valid,
                attn_mask, heads: DINOHeads) -> Predictions:
        """Queries ``tgt [B, T, C]`` with boxes ``reference_boxes [B, T, 4]`` (sigmoid space) over ``memory
        [B, N, C]`` -> every layer's predictions: logits ``[num_layers, B, T, K]``, boxes
        ``[num_layers, B, T, 4]``."""
        valid_ratios_4d = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        reference = reference_boxes.detach()
        prediction_reference = reference  # the box layer i's prediction refines (look-forward-twice: with grad)
        predictions = []
        for index, layer in enumerate(self.layers):
            reference_input = reference[:, :, None] * valid_ratios_4d  # [B, T, L, 4]
            # detrex embeds reference_input[:, :, 0] (scaled by level 0's valid ratio), which makes a query's
            # position depend on how much the batch is padded; the unpadded box keeps the model padding-invariant.
            query_pos = self.ref_point_head(get_sine_pos_embed(reference, self.embed_dim // 2))
            tgt = layer(tgt, query_pos, reference_input, memory, spatial_shapes, memory_valid, attn_mask)
            predictions.append(heads.predict(index, self.norm(tgt), prediction_reference))
            if index + 1 < len(self.layers):  # the last layer's refined box would feed nothing
                refined = heads.refine(index, tgt, reference)
                reference = refined.detach()
                prediction_reference = refined if self.look_forward_twice else reference
        return Predictions(torch.stack([p.logits for p in predictions]),
                           torch.stack([p.boxes for p in predictions]))


class DINOTransformer(nn.Module):
    """Encoder + query selection + decoder. The prediction heads (``DINOHeads``) are passed to ``forward``."""

    def __init__(self, encoder: DINOTransformerEncoder, decoder: DINOTransformerDecoder,
                 num_feature_levels: int = 4):
        super().__init__()
        if encoder.embed_dim != decoder.embed_dim:
            raise ValueError(f"DINOTransformer: encoder.embed_dim={encoder.embed_dim} != "
                             f"decoder.embed_dim={decoder.embed_dim}")
        if encoder.num_feature_levels != num_feature_levels:
            raise ValueError(f"DINOTransformer: encoder.num_feature_levels={encoder.num_feature_levels} != "
                             f"num_feature_levels={num_feature_levels}")
        self.encoder, self.decoder = encoder, decoder
        self.embed_dim, self.num_feature_levels = encoder.embed_dim, num_feature_levels
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, self.embed_dim))
        self.enc_output = nn.Linear(self.embed_dim, self.embed_dim)  # memory -> proposal features
        self.enc_output_norm = nn.LayerNorm(self.embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """As detrex: Xavier for every matrix, Deformable DETR's init for the deformable attentions."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()
        nn.init.normal_(self.level_embeds)

    @staticmethod
    def valid_sizes(masks: List[torch.Tensor]) -> torch.Tensor:
        """Real (unpadded) width and height of every level: [B, L, 2] (w, h); padding is bottom/right."""
        return torch.stack([torch.stack([m[:, 0, :].sum(1), m[:, :, 0].sum(1)], -1) for m in masks], 1).float()

    def encoder_proposals(self, memory, memory_valid, spatial_shapes, valid_sizes
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``memory [B, N, C]``, ``memory_valid [B, N]``, ``valid_sizes [B, L, 2]`` -> proposal features
        ``[B, N, C]``, anchors ``[B, N, 4]`` (logit space) and ``usable [B, N]``. One anchor box per encoder
        token (its pixel centre, side 0.05 * 2^level of the image); tokens on padding or too close to the
        border get +inf and are never selected."""
        proposals = []
        for level, (h, w) in enumerate(spatial_shapes):
            ys, xs = torch.meshgrid(torch.arange(h, device=memory.device, dtype=torch.float32) + 0.5,
                                    torch.arange(w, device=memory.device, dtype=torch.float32) + 0.5, indexing="ij")
            xy = torch.stack([xs, ys], -1).view(1, -1, 2) / valid_sizes[:, None, level]
            wh = torch.full_like(xy, 0.05 * 2.0 ** level)
            proposals.append(torch.cat([xy, wh], -1))
        proposals = torch.cat(proposals, 1)
        usable = ((proposals > 0.01) & (proposals < 0.99)).all(-1) & memory_valid
        proposals = inverse_sigmoid(proposals).masked_fill(~usable[..., None], float("inf"))
        features = memory.masked_fill(~usable[..., None], 0.0)
        return self.enc_output_norm(self.enc_output(features)), proposals, usable

    def forward(self, features: List[torch.Tensor], masks: List[torch.Tensor], pos_embeds: List[torch.Tensor],
                content_queries: torch.Tensor, heads: DINOHeads,
                denoising: Optional[DenoisingQueries] = None) -> TransformerOutput:
        """
        Args:
            features/masks/pos_embeds: per level [B, C, h, w] / bool [B, h, w] (True = real) / [B, C, h, w].
            content_queries: [K, C] learned content of the K matching queries (K = number selected).
            heads: the class/box heads of every decoder layer and of the encoder proposals.
            denoising: the batch's denoising queries (training), or None.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"DINOTransformer built for {self.num_feature_levels} feature levels got "
                             f"{len(features)}; set model.transformer.num_feature_levels (and the encoder's "
                             f"and decoder's) to backbone.num_levels")
        spatial_shapes = [tuple(f.shape[-2:]) for f in features]
        src = torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embeds[lvl] for lvl, p in enumerate(pos_embeds)], 1)
        valid = torch.cat([m.flatten(1) for m in masks], 1)
        sizes = self.valid_sizes(masks)
        padded_sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=torch.float32, device=src.device)
        valid_ratios = sizes / padded_sizes  # [B, L, 2] (w, h)

        memory = self.encoder(src, pos, spatial_shapes, valid_ratios, valid)

        # Two-stage mixed query selection.
        proposal_features, proposals, usable = self.encoder_proposals(memory, valid, spatial_shapes, sizes)
        all_logits, all_boxes_unact = heads.score_proposals(proposal_features, proposals)
        num_queries = content_queries.shape[0]
        scores = all_logits.max(-1)[0].masked_fill(~usable, float("-inf"))
        topk = scores.topk(num_queries, dim=1)[1]
        enc_logits = torch.gather(all_logits, 1, topk[..., None].expand(-1, -1, all_logits.shape[-1]))
        enc_boxes_unact = torch.gather(all_boxes_unact, 1, topk[..., None].expand(-1, -1, 4))

        tgt = content_queries[None].expand(src.shape[0], -1, -1)
        reference = enc_boxes_unact.detach().sigmoid()
        attn_mask = None
        if denoising is not None:
            tgt, reference = denoising.prepend_to(tgt, reference)
            attn_mask = denoising.attn_mask

        decoded = self.decoder(tgt, reference, memory, spatial_shapes, valid_ratios, valid, attn_mask, heads)
        return TransformerOutput(decoded, Predictions(enc_logits, enc_boxes_unact.sigmoid()))
