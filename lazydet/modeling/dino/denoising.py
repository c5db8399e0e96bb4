"""Contrastive denoising (DINO, Zhang et al. 2022, sec. 3.3).

During training the decoder also receives noised copies of the ground truth. Each *group* holds one
positive and one negative copy of every box of an image (padded to the batch's largest box count):
positives move each box edge by less than ``box_noise_scale * (w or h) / 2`` and must be reconstructed;
negatives move it by between 1x and 2x that and must be classified "no object". Labels are flipped to a
random class with probability ``label_noise_ratio / 2``. The attention mask keeps groups from seeing each
other and the matching queries from seeing any denoising query (which would leak the ground truth).

Layout of the P = num_groups * 2 * pad denoising queries of an image:
``[group 0: positives (pad) | negatives (pad)] [group 1: ...] ...``, copy j of box j at offset j.
The decoder sees ``[P denoising queries | K matching queries]``: ``DenoisingQueries.prepend_to`` builds that
sequence and ``split_predictions`` takes the decoder's predictions apart again; nothing else knows the layout.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from ..layers import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid
from .heads import Predictions


@dataclass
class DenoisingMeta:
    """Sizes of a batch's denoising queries: ``num_groups`` groups of ``pad`` positives then ``pad``
    negatives (``pad`` = most boxes of an image in the batch; 0 when no image has a box)."""
    num_groups: int
    pad: int

    @property
    def group_size(self) -> int:
        """Queries per group: ``pad`` positives then ``pad`` negatives."""
        return 2 * self.pad

    @property
    def num_queries(self) -> int:
        """P, the denoising queries of an image."""
        return self.num_groups * self.group_size

    def positive_indices(self, num_boxes: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(query index, target index) of the positive queries of an image with ``num_boxes`` boxes."""
        targets = torch.arange(num_boxes, device=device).repeat(self.num_groups)
        groups = torch.arange(self.num_groups, device=device).repeat_interleave(num_boxes)
        return groups * self.group_size + targets, targets


def num_denoising_groups(dn_number: int, max_boxes: int) -> int:
    """detrex's rule: about ``dn_number`` positive (and as many negative) queries per image, at least one group."""
    return max(1, dn_number // max_boxes)


def noise_labels(labels: torch.Tensor, label_noise_ratio: float, num_classes: int,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label, with probability ``label_noise_ratio / 2``, by a uniformly random class."""
    if label_noise_ratio <= 0:
        return labels.clone()
    flip = torch.rand(labels.shape, device=labels.device, generator=generator) < label_noise_ratio * 0.5
    random_labels = torch.randint(0, num_classes, labels.shape, device=labels.device, generator=generator)
    return torch.where(flip, random_labels, labels)


def noise_boxes(boxes: torch.Tensor, negative: torch.Tensor, box_noise_scale: float,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Move each corner of cxcywh ``boxes`` [N, 4] by ``u * scale * (w, h) / 2`` with random sign, where
    ``u ~ U[0, 1)`` for positives and ``U[1, 2)`` for ``negative`` [N] rows; clamp to the image."""
    if box_noise_scale <= 0:
        return boxes.clone()
    half_wh = boxes[:, 2:].repeat(1, 2) * 0.5
    sign = torch.randint(0, 2, boxes.shape, device=boxes.device, generator=generator).float() * 2.0 - 1.0
    magnitude = torch.rand(boxes.shape, device=boxes.device, generator=generator) + negative[:, None].float()
    corners = box_cxcywh_to_xyxy(boxes) + sign * magnitude * half_wh * box_noise_scale
    return box_xyxy_to_cxcywh(corners.clamp(0.0, 1.0))


def dn_attention_mask(meta: DenoisingMeta, num_matching: int, device=None) -> torch.Tensor:
    """[P + K, P + K] bool, True = may not attend. Rows/cols: P denoising queries then K matching queries."""
    size = meta.num_queries + num_matching
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[meta.num_queries:, :meta.num_queries] = True  # matching queries never see denoising ones
    for g in range(meta.num_groups):
        start, end = g * meta.group_size, (g + 1) * meta.group_size
        mask[start:end, :start] = True  # nor do groups see each other
        mask[start:end, end:meta.num_queries] = True
    return mask


@dataclass
class DenoisingQueries:
    """The denoising queries of a batch: ``content [B, P, C]`` (label embeddings), ``boxes_unact [B, P, 4]``
    (noised boxes in logit space), ``attn_mask [P + K, P + K]`` bool, True = may not attend (None when P = 0),
    and ``meta`` (the layout)."""
    content: torch.Tensor
    boxes_unact: torch.Tensor
    attn_mask: Optional[torch.Tensor]
    meta: DenoisingMeta

    def prepend_to(self, content: torch.Tensor, reference: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Matching queries ``content [B, K, C]`` and reference boxes ``reference [B, K, 4]`` (sigmoid space)
        -> the decoder's input ``[B, P + K, C]`` and ``[B, P + K, 4]``, denoising queries first."""
        return (torch.cat([self.content, content], 1),
                torch.cat([self.boxes_unact.sigmoid(), reference], 1))


def split_predictions(predictions: Predictions, denoising: Optional[DenoisingQueries]
                      ) -> Tuple[Predictions, Optional[Predictions]]:
    """Decoder predictions over ``[P denoising | K matching]`` queries (``[..., P + K, .]``) -> the matching
    queries' ``[..., K, .]`` and the denoising queries' ``[..., P, .]`` (None without denoising)."""
    if denoising is None:
        return predictions, None
    num_dn = denoising.meta.num_queries
    return predictions.queries(slice(num_dn, None)), predictions.queries(slice(0, num_dn))


def prepare_contrastive_denoising(targets: List[dict], dn_number: int, label_noise_ratio: float,
                                  box_noise_scale: float, num_classes: int, label_embedding: torch.nn.Embedding,
                                  num_matching: int, generator: Optional[torch.Generator] = None
                                  ) -> Optional[DenoisingQueries]:
    """Build the denoising queries of a batch of ``targets`` (``labels [n]``, ``boxes [n, 4]`` cxcywh) for
    ``num_matching`` matching queries. None when ``dn_number <= 0``; no query at all (P = 0, so the
    denoising losses are zeros with the usual names) when no image of the batch has a box."""
    if dn_number <= 0:
        return None
    counts = [len(t["labels"]) for t in targets]
    pad = max(counts, default=0)
    meta = DenoisingMeta(num_groups=num_denoising_groups(dn_number, pad) if pad else 1, pad=pad)
    device = label_embedding.weight.device
    batch, embed_dim = len(targets), label_embedding.embedding_dim
    content = torch.zeros(batch, meta.num_queries, embed_dim, device=device)
    boxes_unact = torch.zeros(batch, meta.num_queries, 4, device=device)  # padding queries: logit 0 = box 0.5
    for b, t in enumerate(targets):
        n = counts[b]
        if n == 0:
            continue
        # One positive and one negative copy of every box per group.
        copies = 2 * meta.num_groups
        labels = t["labels"].to(device).repeat(copies)
        boxes = t["boxes"].to(device=device, dtype=torch.float32).repeat(copies, 1)
        copy_index = torch.arange(copies, device=device).repeat_interleave(n)
        negative = copy_index % 2 == 1
        slots = copy_index * meta.pad + torch.arange(n, device=device).repeat(copies)
        content[b, slots] = label_embedding(noise_labels(labels, label_noise_ratio, num_classes, generator))
        boxes_unact[b, slots] = inverse_sigmoid(noise_boxes(boxes, negative, box_noise_scale, generator))
    attn_mask = dn_attention_mask(meta, num_matching, device) if meta.num_queries else None
    return DenoisingQueries(content, boxes_unact, attn_mask, meta)
