"""COCO box-AP evaluation and the inference loop (see docs/data.md)."""
from .coco_evaluation import COCOEvaluator, evaluate_coco_detections, format_results_table
from .inference import inference_on_dataset

__all__ = ["COCOEvaluator", "evaluate_coco_detections", "format_results_table", "inference_on_dataset"]
