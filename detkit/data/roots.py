"""Where the configs' datasets live when a config does not name a folder itself.

``$DETKIT_DATA`` when set; otherwise ``data/`` of the source checkout detkit is imported from (so a
clone behaves the same from any folder); otherwise ``data/`` under the current folder (an
installed package, as Ultralytics' ``datasets/``). One dataset's own variable (``$DETKIT_COCO``,
``$DETKIT_SHAPES``, ``$DETKIT_COCO128``) overrides its folder alone.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkout_root", "coco128_root", "data_dir", "dataset_root"]


def checkout_root() -> Path | None:
    """The repository root when detkit is imported from a source checkout (``setup.cfg`` beside the
    package), else None (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.cfg").is_file() and (root / "detkit").is_dir() else None


def data_dir() -> Path:
    """The folder holding the configs' datasets (see the module docstring)."""
    if os.environ.get("DETKIT_DATA"):
        return Path(os.environ["DETKIT_DATA"])
    root = checkout_root()
    return root / "data" if root is not None else Path("data")


def dataset_root(name: str, env: str) -> str:
    """``$env`` when set, else ``data_dir() / name``."""
    return os.environ.get(env) or str(data_dir() / name)


def coco128_root() -> str:
    """coco128: ``$DETKIT_COCO128``, else the shared copy beside a checkout (``../shared/data/coco128``),
    else ``data_dir() / "coco128"``."""
    if os.environ.get("DETKIT_COCO128"):
        return os.environ["DETKIT_COCO128"]
    root = checkout_root()
    shared = root.parent / "shared" / "data" / "coco128" if root is not None else None
    return str(shared) if shared is not None and shared.is_dir() else str(data_dir() / "coco128")
