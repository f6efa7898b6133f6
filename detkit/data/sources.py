"""A dataset on disk, found from one path: the splits, their format and the class names.

:func:`resolve_source` takes what a user points ``--data`` at and returns a :class:`DatasetSource`
whose :meth:`~DatasetSource.dataset` gives the lazy call (config node) of each split's dataset.
What the path may be, and how its folders are found (``docs/custom_data.md`` has the same rules):

- **an Ultralytics / Roboflow ``data.yaml``** (or a folder holding ``data.yaml``): ``names`` a list
  or an ``{id: name}`` dict (``nc``, when given, must equal its length); the dataset root is
  ``path:`` (relative to the yaml's folder) when given, else the yaml's folder; ``train`` / ``val``
  / ``test`` are image folders relative to the root. As Ultralytics does, an entry starting with
  ``../`` that does not exist relative to the root is tried without its ``../`` (Roboflow writes
  ``train: ../train/images`` beside ``train/``); each may also be a ``.txt`` list of images (paths
  relative to the list's folder) or a list of folders / lists. Labels: each image's folder with its
  last ``images`` component replaced by ``labels``.
- **a YOLO dataset root**: ``images/<split>/`` and ``labels/<split>/``; splits named ``train`` /
  ``train2017``, ``val`` / ``valid`` / ``validation`` / ``val2017``, ``test`` / ``test2017``; names
  from ``names.txt`` / ``classes.txt`` in the root; without a val split the training images are
  evaluated, with a warning.
- **a COCO instances json**: its split is read from its name (``val`` / ``valid`` -> val, ``test``
  -> test), else from its folder when named for a split, else train; the other splits are the same
  path with that word swapped
  (``instances_train2017.json`` -> ``instances_val2017.json``, Roboflow's
  ``train/_annotations.coco.json`` -> ``valid/_annotations.coco.json``); without a val json the
  training json is evaluated too, with a warning. Images: ``img_dir`` when given (for the json
  named), else the json's own folder when it holds the first image (Roboflow), else
  ``<root>/<split>`` or ``<root>/images/<split>`` for ``<root>/annotations/instances_<split>.json``.
  A folder holding ``annotations/instances_*.json`` or ``*/_annotations.coco.json`` is a COCO root.
- **a Pascal VOC root** (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``; or a
  ``VOCdevkit`` holding one such folder): with ``ImageSets/Main/test.txt`` training reads
  ``trainval`` (else ``train``) and validation ``test``; else ``train`` and ``val``. Names from
  ``classes.txt`` / ``names.txt`` in the root, else the 20 VOC classes when every object is one of
  them, else the objects' names sorted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkit.config import ConfigDict, L
from detkit.data.coco import CocoDataset
from detkit.data.voc import VOC_CLASSES, VocDataset
from detkit.data.yolo import YoloDataset, load_class_names
from detkit.errors import Argument, DataError

__all__ = ["SPLITS", "DatasetSource", "SplitSource", "coco_class_names", "coco_image_dirs", "read_data_yaml",
           "resolve_source", "resolve_yaml_entry", "voc_class_names", "yaml_class_names"]

logger = logging.getLogger("detkit")

SPLITS = ("train", "val", "test")
# Folder / file-name words that name each split (the first is the canonical one).
SPLIT_WORDS = {"train": ("train", "train2017"), "val": ("val", "valid", "validation", "val2017"),
               "test": ("test", "test2017")}
NAMES_FILES = ("names.txt", "classes.txt")
YAML_FILES = ("data.yaml", "data.yml", "dataset.yaml")
# The words swapped to find another split's COCO json (longest first).
PLAIN_WORDS = {"train": ("train",), "val": ("validation", "valid", "val"), "test": ("test",)}
FORMATS = {"yolo": YoloDataset, "coco": CocoDataset, "voc": VocDataset}


@dataclass(frozen=True)
class SplitSource:
    """One split: its format's dataset arguments (paths only: no classes, no pipeline).

    Attributes:
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"`` (a key of :data:`FORMATS`).
        kwargs: the dataset class's path arguments (COCO: ``ann_file``, ``img_dir``; YOLO: ``img_dir``; VOC:
            ``root``, ``split``).
    """

    fmt: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class DatasetSource:
    """What :func:`resolve_source` found: the splits present and the class names (in label order).

    Attributes:
        path: the path given to :func:`resolve_source`.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.
        class_names: the classes, label 0 first.
        splits: ``{"train": SplitSource, "val": ..., "test": ...}``, the splits found.
    """

    path: str
    fmt: str
    class_names: tuple[str, ...]
    splits: Mapping[str, SplitSource] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self, split: str, pipeline: Sequence[Any] | Mapping[str, Any] | None = None) -> ConfigDict:
        """The lazy call of ``split``'s dataset with ``pipeline`` (config nodes of transforms).

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            pipeline: the transforms' config nodes (lazy calls), or None.

        Returns:
            A lazy call (``instantiate`` builds the dataset); YOLO and VOC datasets get ``class_names``.

        Raises:
            DataError: the data has no such split.
        """
        if split not in self.splits:
            raise DataError(f"{self.path}: no {split} split (found: {', '.join(self.splits) or 'none'})")
        src = self.splits[split]
        kwargs = dict(src.kwargs)
        if src.fmt in ("yolo", "voc"):
            kwargs["class_names"] = list(self.class_names)
        return L(FORMATS[src.fmt])(**kwargs, pipeline=pipeline)


def resolve_source(path: str | os.PathLike, img_dir: str | None = None) -> DatasetSource:
    """The dataset at ``path`` (see the module docstring for what it may be).

    Args:
        path: a ``data.yaml``, a YOLO root, a COCO json or root, a VOC root.
        img_dir: the image folder of a COCO json given as ``path`` (default: found by the rules above).

    Returns:
        A :class:`DatasetSource`: ``resolve_source("data.yaml").class_names``, ``.splits["val"]``.

    Raises:
        DataError: one line naming the file or key: a missing path, split or names, ``nc`` not
            matching ``names``, an unknown layout, splits whose classes differ.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or folder")
    if img_dir is not None and not (p.is_file() and p.suffix.lower() == ".json"):
        raise DataError(f"{path}: an image folder ({img_dir}) is only for a COCO json")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            return _from_yaml(p)
        if suffix == ".json":
            return _from_coco_json(p, img_dir)
        raise DataError(f"{path}: not a dataset file; accepted: a data.yaml, a COCO json, or a folder "
                         "(YOLO root, COCO root, VOC root)")
    for name in YAML_FILES:
        if (p / name).is_file():
            return _from_yaml(p / name)
    if (p / "Annotations").is_dir() or _voc_child(p) is not None:
        return _from_voc(_voc_child(p) or p)
    if (p / "images").is_dir() and (p / "labels").is_dir():
        return _from_yolo_root(p)
    coco = sorted((p / "annotations").glob("instances_*.json")) or sorted(p.glob("*/_annotations.coco.json"))
    if coco:
        first = next((j for j in coco if _split_of(j) == "train"), coco[0])
        return _from_coco_json(first, None)
    raise DataError(f"{path}: no dataset layout found; accepted: a data.yaml, a YOLO root (images/<split>, "
                     "labels/<split>), a COCO json or a folder with annotations/instances_*.json, a VOC root "
                     "(Annotations/, JPEGImages/)")


# ----- YOLO ------------------------------------------------------------------------------------


def resolve_yaml_entry(root: Path, entry: str) -> Path:
    """Where a ``train`` / ``val`` / ``test`` entry of a data.yaml points: ``root / entry``, or,
    when that does not exist and ``entry`` starts with ``../``, ``root / entry[3:]`` (Ultralytics'
    rule, which makes Roboflow's ``../train/images`` beside the yaml work)."""
    target = Path(entry) if Path(entry).is_absolute() else root / entry
    if not target.exists() and entry.startswith("../"):
        target = root / entry[3:]
    return Path(os.path.normpath(target))


def coco_image_dirs(ann_file: str) -> list[str]:
    """Where the standard layouts put the images of ``root/annotations/instances_<split>.json``:
    ``root/<split>`` (COCO's own) and ``root/images/<split>`` (Ultralytics')."""
    p = Path(ann_file)
    split = p.stem.split("_", 1)[-1]
    root = p.parent.parent
    return [str(root / split), str(root / "images" / split)]


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The mapping an Ultralytics ``data.yaml`` holds; DataError naming the file when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:  # one line: what the parser found, and where
        parts = [f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(text)
                 for text, mark in ((e.context, e.context_mark), (e.problem, e.problem_mark)) if text]
        raise DataError(f"{path}: not valid YAML: {': '.join(parts) or type(e).__name__}") from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read the data file: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a data.yaml (expected keys path, train, val, names)")
    return data


def yaml_class_names(path: Path, data: dict[str, Any]) -> list[str]:
    """The class names of a data.yaml read by :func:`read_data_yaml`: its ``names`` (a list or an
    ``{id: name}`` dict), checked against ``nc`` when given; DataError naming the file otherwise."""
    if "names" not in data:
        raise DataError(f"{path}: no 'names' (the class names, a list or {{id: name}} dict)")
    try:
        names = list(load_class_names(data["names"]))
    except ValueError as e:
        raise DataError(f"{path}: names: {e}") from None
    if not names:
        raise DataError(f"{path}: names is empty")
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f"{path}: nc is {nc} but names has {len(names)} entries")
    return names


def _from_yaml(path: Path) -> DatasetSource:
    data = read_data_yaml(path)
    names = yaml_class_names(path, data)
    root = Path(str(data["path"])) if data.get("path") else Path(".")
    if not root.is_absolute():  # `path:` is relative to the yaml's folder, as is a yaml without one
        root = path.parent / root
    splits: dict[str, SplitSource] = {}
    for split in SPLITS:
        entry = data.get(split)
        if not entry:
            continue
        entries = [entry] if isinstance(entry, str) else entry
        if not isinstance(entries, list) or not all(isinstance(item, str) for item in entries):
            raise DataError(f"{path}: {split}: expected a folder, a .txt list of images or a list of folders, "
                             f"got {entry!r}")
        found = []
        for item in entries:
            target = resolve_yaml_entry(root, item)
            is_list = target.suffix.lower() == ".txt"
            if not (target.is_file() if is_list else target.is_dir()):
                kind = "image list" if is_list else "image folder"
                raise DataError(f"{path}: {split}: {kind} not found: {target} (from {item!r}, root {root})")
            found.append(str(target))
        splits[split] = SplitSource("yolo", {"img_dir": found[0] if len(found) == 1 else found})
    if not splits:
        raise DataError(f"{path}: no train / val / test folder listed")
    return DatasetSource(str(path), "yolo", tuple(names), splits)


def _split_folders(parent: Path) -> dict[str, Path]:
    """``{split: folder}`` for the sub-folders of ``parent`` named for a split."""
    found = {}
    for split, words in SPLIT_WORDS.items():
        folder = next((parent / w for w in words if (parent / w).is_dir()), None)
        if folder is not None:
            found[split] = folder
    return found


def _from_yolo_root(root: Path) -> DatasetSource:
    folders = _split_folders(root / "images")
    if not folders:
        raise DataError(f"{root}: no split folder in {root / 'images'} (accepted names: "
                         f"{', '.join(w for ws in SPLIT_WORDS.values() for w in ws)})")
    names_file = next((root / n for n in NAMES_FILES if (root / n).is_file()), None)
    if names_file is None:
        raise DataError(f"{root}: no class names: add {' or '.join(NAMES_FILES)} (one name per line) or a data.yaml")
    names = load_class_names(str(names_file))
    if "val" not in folders and "train" in folders:
        logger.warning(f"{root}: no val split in {root / 'images'}: validation evaluates the training images")
        folders["val"] = folders["train"]
    return DatasetSource(str(root), "yolo", tuple(names),
                         {s: SplitSource("yolo", {"img_dir": str(f)}) for s, f in folders.items()})


# ----- COCO ------------------------------------------------------------------------------------


def _split_of(ann: Path) -> str:
    """The split a COCO json's name says it holds, else its folder when named for a split (Roboflow's
    ``valid/_annotations.coco.json``), else train."""
    for split in ("val", "test", "train"):
        if split in ann.stem.lower():
            return split
    return next((s for s, words in SPLIT_WORDS.items() if ann.parent.name.lower() in words), "train")


def _sibling_jsons(ann: Path) -> dict[str, Path]:
    """The other splits' jsons: ``ann``'s path with its split word swapped in its file name, else
    in its folder's name (``instances_train2017.json`` -> ``instances_val2017.json``,
    ``train/_annotations.coco.json`` -> ``valid/_annotations.coco.json``)."""
    split = _split_of(ann)
    found = {split: ann}
    for in_name in (True, False):
        text = ann.name if in_name else ann.parent.name
        if not in_name and text.lower() not in SPLIT_WORDS[split]:
            break  # a folder is swapped only when it is named for the split
        word = next((w for w in PLAIN_WORDS[split] if w in text.lower()), None)
        if word is None:
            continue
        at = text.lower().rfind(word)
        for other in SPLITS:
            for w in PLAIN_WORDS[other] if other not in found else ():
                swapped = text[:at] + w + text[at + len(word):]
                cand = ann.parent / swapped if in_name else ann.parent.parent / swapped / ann.name
                if cand.is_file():
                    found[other] = cand
                    break
        break
    return found


def _coco_images(ann: Path, data: dict[str, Any], img_dir: str | None) -> str:
    if img_dir is not None:
        if not os.path.isdir(img_dir):
            raise DataError(f"{ann}: image folder not found: {img_dir}")
        return img_dir
    first = next((im.get("file_name") for im in data.get("images", []) if isinstance(im, dict)), None)
    tried = [str(ann.parent), *coco_image_dirs(str(ann))]
    for folder in tried:
        if os.path.isdir(folder) and (first is None or os.path.isfile(os.path.join(folder, str(first)))):
            return folder
    raise DataError("{ann}: image folder not found (tried {tried}); pass {img_dir}",
                    values={"ann": ann, "tried": ", ".join(tried), "img_dir": Argument("img_dir", metavar="DIR")})


def _coco_names(ann: Path, data: dict[str, Any]) -> tuple[str, ...]:
    cats = [c for c in data.get("categories", []) if isinstance(c, dict) and isinstance(c.get("id"), int)]
    if not cats:
        raise DataError(f"{ann}: no categories")
    return tuple(str(c.get("name", c["id"])) for c in sorted(cats, key=lambda c: c["id"]))


def coco_class_names(ann_file: str | os.PathLike) -> tuple[str, ...]:
    """A COCO json's category names in sorted-id order (the datasets' label order)."""
    return _coco_names(Path(ann_file), _read_json(Path(ann_file)))


def _read_json(ann: Path) -> dict[str, Any]:
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{ann}: cannot read a COCO json: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DataError(f"{ann}: not a COCO instances json (no 'categories' list)")
    return data


def _from_coco_json(ann: Path, img_dir: str | None) -> DatasetSource:
    jsons = _sibling_jsons(ann)
    if "val" not in jsons and "train" in jsons:
        logger.warning(f"{ann}: no val json found beside it (tried the name with 'val' / 'valid'): validation "
                       "evaluates the training images")
        jsons["val"] = jsons["train"]
    names: tuple[str, ...] | None = None
    first: Path | None = None
    splits = {}
    for split in SPLITS:
        if split not in jsons:
            continue
        path = jsons[split]
        data = _read_json(path)
        these = _coco_names(path, data)
        if names is not None and these != names:
            raise DataError(f"{path}: categories {list(these)[:5]}... differ from {first}'s {list(names)[:5]}...")
        names, first = these, first or path
        splits[split] = SplitSource("coco", {"ann_file": str(path),
                                             "img_dir": _coco_images(path, data, img_dir if path == ann else None)})
    assert names is not None
    return DatasetSource(str(ann), "coco", names, splits)


# ----- VOC -------------------------------------------------------------------------------------


def _voc_child(p: Path) -> Path | None:
    """The one ``VOC*`` folder holding ``Annotations/`` under a ``VOCdevkit``-style folder, else None."""
    children = sorted(d for d in p.glob("VOC*") if (d / "Annotations").is_dir())
    return children[0] if len(children) == 1 else None


def voc_class_names(root: str | os.PathLike) -> tuple[str, ...]:
    """A VOC root's classes: ``classes.txt`` / ``names.txt`` in the root, else the 20 VOC classes when every
    object is one of them, else the objects' names sorted (what ``--data`` and ``detkit check`` use)."""
    root = Path(root)
    names_file = next((root / n for n in NAMES_FILES if (root / n).is_file()), None)
    if names_file is not None:
        return tuple(load_class_names(str(names_file)))
    import xml.etree.ElementTree as ET

    seen: set[str] = set()
    for xml in (root / "Annotations").glob("*.xml"):
        try:
            seen.update((o.findtext("name") or "").strip() for o in ET.parse(xml).getroot().iter("object"))
        except ET.ParseError:
            continue  # the dataset counts it when it reads the file
    seen.discard("")
    return tuple(VOC_CLASSES) if seen <= set(VOC_CLASSES) else tuple(sorted(seen))


def _from_voc(root: Path) -> DatasetSource:
    lists = root / "ImageSets" / "Main"
    has = {n: (lists / f"{n}.txt").is_file() for n in ("train", "val", "trainval", "test")}
    if has["test"]:
        splits = {"train": "trainval" if has["trainval"] else "train", "val": "test"}
    else:
        splits = {"train": "train", "val": "val"}
    missing = [s for s in splits.values() if not has[s]]
    if missing:
        raise DataError(f"{root}: no {', '.join(f'ImageSets/Main/{m}.txt' for m in missing)} (VOC split lists)")
    names = voc_class_names(root)
    return DatasetSource(str(root), "voc", names,
                         {s: SplitSource("voc", {"root": str(root), "split": lst}) for s, lst in splits.items()})

