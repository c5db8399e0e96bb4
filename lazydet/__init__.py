"""lazydet: detectron2/detrex-style lazy-config framework for DINO on DINOv2."""
__version__ = "0.1.0"
