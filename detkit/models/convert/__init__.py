"""Weights of other toolkits -> detkit models (pure key and tensor mapping; the tools unpickle)."""

from detkit.models.convert.ultralytics import (
    ConversionError,
    ConvertedWeights,
    convert_ultralytics,
    convert_yolov8,
    detkit_to_ultralytics_key,
    required_overrides,
    to_ultralytics_state_dict,
    ultralytics_config,
    ultralytics_layout,
    ultralytics_to_detkit_key,
    yolov8_config,
)

__all__ = [
    "ConversionError",
    "ConvertedWeights",
    "convert_ultralytics",
    "convert_yolov8",
    "detkit_to_ultralytics_key",
    "required_overrides",
    "to_ultralytics_state_dict",
    "ultralytics_config",
    "ultralytics_layout",
    "ultralytics_to_detkit_key",
    "yolov8_config",
]
