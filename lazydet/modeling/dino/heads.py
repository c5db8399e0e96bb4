"""DINO's prediction heads: one class head and one box head per decoder layer, plus one pair that scores
the encoder's proposals. ``DINOHeads`` is the only code that holds or indexes them.

Boxes are refined in logit space: ``box = sigmoid(delta + logit(reference))`` with ``delta`` the box head's
output. As in detrex (``projects/dino/modeling/dino_transformer.py``) and IDEA-Research DINO
(``models/dino/deformable_transformer.py``), the decoder's next reference comes from the layer's
*un-normed* output (``refine``) while the predictions that the losses and the evaluation see come from
its *normed* output (``predict``).
"""
import copy
import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

from ..layers import MLP, inverse_sigmoid


@dataclass
class Predictions:
    """Class logits and boxes of a set of queries.

    ``logits``: ``[..., Q, num_classes]`` (before the sigmoid); ``boxes``: ``[..., Q, 4]`` (cx, cy, w, h) in
    [0, 1] of the unpadded image. The leading dims are ``[num_layers, B]`` for the decoder, ``[B]`` for one
    layer or the encoder proposals.
    """
    logits: torch.Tensor
    boxes: torch.Tensor

    def layer(self, index: int) -> "Predictions":
        """The predictions of decoder layer ``index`` (``[L, B, Q, .]`` -> ``[B, Q, .]``)."""
        return Predictions(self.logits[index], self.boxes[index])

    def queries(self, index: slice) -> "Predictions":
        """The queries ``index`` of every leading dim (``[..., Q, .]`` -> ``[..., Q', .]``)."""
        return Predictions(self.logits[..., index, :], self.boxes[..., index, :])


class DINOHeads(nn.Module):
    """``num_decoder_layers + 1`` class heads (Linear, prior probability 0.01) and box heads (3-layer MLP,
    last layer zero, so a fresh head keeps the reference box); the last pair scores encoder proposals."""

    def __init__(self, embed_dim: int, num_classes: int, num_decoder_layers: int):
        super().__init__()
        class_head = nn.Linear(embed_dim, num_classes)
        nn.init.constant_(class_head.bias, -math.log((1 - 0.01) / 0.01))
        box_head = MLP(embed_dim, embed_dim, 4, 3)
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        self.num_decoder_layers = num_decoder_layers
        self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_decoder_layers + 1))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_decoder_layers + 1))

    def score_proposals(self, features: torch.Tensor, proposals_unact: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder tokens ``features [B, N, C]`` with anchor boxes ``proposals_unact [B, N, 4]`` (logit space)
        -> class logits ``[B, N, K]`` and refined proposals ``[B, N, 4]``, still in logit space."""
        last = self.num_decoder_layers
        return self.class_embed[last](features), self.bbox_embed[last](features) + proposals_unact

    def refine(self, layer: int, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Next reference box ``[B, T, 4]`` from decoder layer ``layer``'s un-normed ``output [B, T, C]`` and
        the box ``reference [B, T, 4]`` it was given."""
        return (self.bbox_embed[layer](output) + inverse_sigmoid(reference)).sigmoid()

    def predict(self, layer: int, hidden: torch.Tensor, reference: torch.Tensor) -> Predictions:
        """Predictions of decoder layer ``layer`` from its normed output ``hidden [B, T, C]``, the box refined
        from ``reference [B, T, 4]``: logits ``[B, T, K]``, boxes ``[B, T, 4]``."""
        boxes = (self.bbox_embed[layer](hidden) + inverse_sigmoid(reference)).sigmoid()
        return Predictions(self.class_embed[layer](hidden), boxes)
