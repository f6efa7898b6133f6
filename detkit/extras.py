"""Optional packages: imported where needed, a missing one named in one line with how to install it.

    onnx = require("onnx", "ONNX export")
    # MissingExtraError: ONNX export needs the onnx package: pip install 'detkit[onnx]'

The tools report :class:`MissingExtraError` (a :class:`~detkit.config.ConfigError`, so a
``ValueError``) as ``error: <message>`` with exit status 2, never as a traceback. :data:`EXTRAS`
maps each optional module to the extra of ``setup.cfg`` that installs it; a module without an
extra is named by its own pip package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from detkit.errors import ConfigError

__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "require"]

# Optional module -> (the pip package, the detkit extra that installs it or None).
EXTRAS: dict[str, tuple[str, str | None]] = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "mlflow": ("mlflow", "mlflow"),  # the extra installs mlflow-skinny, which provides the module
    "wandb": ("wandb", "wandb"),
    "faster_coco_eval": ("faster-coco-eval", "fast"),
    "tensorboard": ("tensorboard", None),
}


class MissingExtraError(ConfigError):
    """An optional package a feature needs is not installed; ``module`` is its import name."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


def install_hint(module: str) -> str:
    """The pip command that installs ``module``: ``pip install 'detkit[onnx]'`` for a module of an
    extra, ``pip install <package>`` otherwise."""
    top = module.split(".")[0]
    package, extra = EXTRAS.get(top, (top.replace("_", "-"), None))
    return f"pip install 'detkit[{extra}]'" if extra else f"pip install {package}"


def require(module: str, purpose: str, provider: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"onnx"``, ``"mlflow.tracking"``) for ``purpose`` (the feature, as
    the user knows it). ``provider`` names the optional module that makes ``module`` work when it
    is another one (``require("torch.utils.tensorboard", ..., provider="tensorboard")``).

    Raises:
        MissingExtraError: the module cannot be imported; one line: ``<purpose> needs the
            <package> package: pip install 'detkit[<extra>]'``, plus the import's own reason when
            it is not plain absence (a broken install).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = provider or module.split(".")[0]
        package = EXTRAS.get(top, (top.replace("_", "-"), None))[0]
        missing = getattr(e, "name", None) or ""
        absent = bool(missing) and (missing in (module, top) or module.startswith(missing + "."))
        reason = "" if absent else f" ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        raise MissingExtraError(f"{purpose} needs the {package} package: {install_hint(top)}{reason}",
                                top) from None
