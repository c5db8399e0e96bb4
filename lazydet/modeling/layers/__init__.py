"""Building blocks of DETR-family detectors: deformable attention, position encodings, MLP, box ops."""
from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou, inverse_sigmoid
from .mlp import MLP
from .ms_deform_attn import MultiScaleDeformableAttention, multi_scale_deformable_attention
from .position_encoding import PositionEmbeddingSine, get_sine_pos_embed
