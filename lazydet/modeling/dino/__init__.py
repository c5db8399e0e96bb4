"""The DINO detector: deformable transformer, contrastive denoising, Hungarian matcher, losses."""
from .criterion import DINOCriterion
from .denoising import DenoisingMeta, dn_attention_mask, prepare_contrastive_denoising
from .dino import DINO
from .matcher import HungarianMatcher
from .postprocess import boxes_to_original_pixels, post_process
from .transformer import DINOTransformer, DINOTransformerDecoder, DINOTransformerEncoder
