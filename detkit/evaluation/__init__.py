"""COCO evaluation of detections (pycocotools, or faster-coco-eval when installed)."""

from detkit.evaluation.coco import BACKENDS, COCOEvaluator, faster_coco_eval_available
from detkit.evaluation.report import SUMMARY_KEYS, format_per_class_table, format_summary
from detkit.evaluation.results import CocoResults, detections_to_coco_results, merge_coco_results, write_coco_results

__all__ = [
    "BACKENDS",
    "COCOEvaluator",
    "CocoResults",
    "SUMMARY_KEYS",
    "detections_to_coco_results",
    "faster_coco_eval_available",
    "format_per_class_table",
    "format_summary",
    "merge_coco_results",
    "write_coco_results",
]
