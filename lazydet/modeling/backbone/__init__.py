"""Backbones: a timm DINOv2 ViT (`DINOv2ViT`) and the ViTDet neck over it (`SimpleFeaturePyramid`)."""
from .dinov2_vit import DINOV2_MODELS, DINOv2ViT, MissingWeightsError, default_weights_path
from .sfp import SimpleFeaturePyramid

__all__ = ["DINOv2ViT", "DINOV2_MODELS", "MissingWeightsError", "SimpleFeaturePyramid", "default_weights_path"]
