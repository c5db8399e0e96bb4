"""The DINO detector: deformable transformer, contrastive denoising, Hungarian matcher, losses."""
from .criterion import DINOCriterion, DINOOutputs
from .denoising import (DenoisingMeta, DenoisingQueries, dn_attention_mask, prepare_contrastive_denoising,
                        split_predictions)
from .dino import DINO
from .heads import DINOHeads, Predictions
from .matcher import HungarianMatcher
from .postprocess import boxes_to_original_pixels, post_process
from .transformer import DINOTransformer, DINOTransformerDecoder, DINOTransformerEncoder, TransformerOutput
