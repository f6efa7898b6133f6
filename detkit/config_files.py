"""Where config files are found: a path as given, or a config shipped inside the package.

detkit's configs live in ``detkit/configs/`` (a repository checkout also shows them as
``configs/``), so an installed package finds them without a checkout::

    find_config("configs/yolov8n_tal.py")   # a path that exists: taken as it is
    find_config("yolov8n_tal.py")           # no such file here: the packaged detkit/configs/yolov8n_tal.py
    find_config("detkit://yolov8n_tal.py")  # always the packaged one
    find_config("yolov8n_tal")              # ".py" may be left out for a packaged config

A path that exists always wins, so a user's own ``yolov8n_tal.py`` in the current folder is the
one loaded. ``_base_`` entries inside a config are relative to that config's own file, as before;
``_base_ = ["detkit://yolov8n_tal.py"]`` inherits a packaged config from a config anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PACKAGE_SCHEME", "config_dir", "find_config", "list_configs"]

PACKAGE_SCHEME = "detkit://"


def config_dir() -> Path:
    """The folder of the configs shipped with the package (``detkit/configs``)."""
    return Path(__file__).resolve().parent / "configs"


def _packaged(name: str) -> Path | None:
    """The packaged config ``name`` (``yolov8n_tal.py``, ``yolov8n_tal``, ``configs/yolov8n_tal.py``,
    ``common/models/yolov4.py``), or None."""
    root = config_dir()
    name = name.replace("\\", "/").lstrip("/")
    candidates = [name, name[len("configs/"):] if name.startswith("configs/") else None]
    for rel in filter(None, candidates):
        for option in (rel, rel + ".py") if not rel.endswith(".py") else (rel,):
            path = (root / option).resolve()
            if path.is_file() and root in path.parents:  # never a file outside the packaged folder
                return path
    return None


def find_config(path: str | os.PathLike) -> str:
    """The config file ``path`` names: the path itself when it is a file, else a packaged config.

    Args:
        path: a file path, ``detkit://NAME`` or the name of a packaged config.

    Returns:
        The path to load (unchanged when it exists as given).

    Raises:
        FileNotFoundError: neither a file nor a packaged config; the message says where it looked.
    """
    text = os.fspath(path)
    if text.startswith(PACKAGE_SCHEME):
        found = _packaged(text[len(PACKAGE_SCHEME):])
        if found is None:
            raise FileNotFoundError(f"config file not found: {text} (no such config in {config_dir()}; "
                                    "`detkit configs` lists them)")
        return str(found)
    if os.path.isfile(text):
        return text
    found = _packaged(text)
    if found is None:
        raise FileNotFoundError(f"config file not found: {text} (not a file, nor a config shipped with detkit; "
                                "`detkit configs` lists those)")
    return str(found)


def list_configs() -> list[str]:
    """Names of the packaged leaf configs (``yolov8n_tal.py``, ...), without the ``common/`` pieces."""
    return sorted(p.name for p in config_dir().glob("*.py"))
