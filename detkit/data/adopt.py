"""A config's data section made to fit a dataset, and the start-up checks that its parts agree.

    cfg = load_config("yolov8n_tal.py")
    adopt_dataset(cfg, "path/to/data.yaml", img_size=320)   # what --data / --img-size do

:func:`adopt_dataset` rebuilds ``cfg.data`` for a dataset found by
:func:`detkit.data.sources.resolve_source`: each split's dataset reads the user's files, the
config's own pipelines are kept (their sizes set from ``data.img_size``), the class count and
names come from the data (``data.num_classes``, ``data.class_names`` and every ``num_classes`` of
the model). The result is a plain config: its dump loads back and trains the same without ``--data``.

:func:`check_data_config` is what a run checks before it touches its work dir: one image size
(every ``size`` of a pipeline transform equals ``data.img_size``, and each pipeline brings images
to that size) and one class count (the datasets', the model's, ``data.num_classes``,
``data.class_names``'s). :func:`check_dataset_classes` checks a built dataset the same way.

:func:`load_data_config` is what a tool with ``--cfg-options`` and ``--data`` does: with ``--data``,
an override of a split's dataset argument (``data.train.dataset.filter_empty=False``) is applied
to the dataset reading the user's data, after it replaced the config's (checked against that
class, not the config's own: :func:`split_dataset_overrides`).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from detkit.cli import cli_message
from detkit.config import TARGET_KEY, ConfigDict, ConfigError, L, apply_overrides, check_signatures, load_config
from detkit.config_checks import DATA_ARGUMENT, check_call_arguments, check_typed_sections
from detkit.data.sources import SPLITS, DatasetSource, coco_class_names, resolve_source
from detkit.errors import Argument, DataError, UsageError

__all__ = ["DEFAULT_IMG_SIZE", "adopt_dataset", "add_data_arguments", "apply_data_arguments", "check_data_config",
           "check_dataset_classes", "check_img_size", "declared_class_names", "default_pipeline", "load_data_config",
           "refuse_replaced_overrides", "set_img_size", "split_dataset_overrides"]

logger = logging.getLogger("detkit")

DEFAULT_IMG_SIZE = 640  # when neither --img-size nor the config gives one
# Dataset arguments carried from the config's dataset to the one reading the user's data.
KEPT_DATASET_ARGS = ("filter_empty", "max_size", "exif_orientation")
# COCO jsons larger than this are not read twice at start-up: their classes are checked once built.
MAX_PEEK_BYTES = 64 << 20
# The argument that sets every image size, named in a message's remedy (a tool prints --img-size N).
IMG_SIZE_ARGUMENT = Argument("img_size", value="N", metavar="N")


# ----- adopting a dataset ----------------------------------------------------------------------


def default_pipeline(split: str, size: int) -> list[ConfigDict]:
    """The pipeline of a split the config has none for: YOLOv5/v8's training augmentation (mosaic,
    affine with scale 0.5 / translate 0.1, HSV, flip) for ``train``, a letterbox for the others.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: the side in pixels of every transform.

    Returns:
        The transforms as lazy calls (config nodes).
    """
    from detkit.data.transforms import LetterBox, Mosaic, RandomAffine, RandomFlip, RandomHSV

    if split == "train":
        return [L(Mosaic)(size=size, p=1.0),
                L(RandomAffine)(size=size, degrees=0.0, translate=0.1, scale=0.5, shear=0.0),
                L(RandomHSV)(h=0.015, s=0.7, v=0.4), L(RandomFlip)(p=0.5)]
    return [L(LetterBox)(size=size)]


def adopt_dataset(cfg: ConfigDict, source: DatasetSource | str | os.PathLike, img_size: int | None = None,
                  img_dir: str | None = None) -> ConfigDict:
    """Rebuild ``cfg.data`` (in place; returned) for the dataset ``source``.

    Args:
        cfg: a loaded config.
        source: a :class:`DatasetSource`, or a path for :func:`~detkit.data.sources.resolve_source`.
        img_size: the training / evaluation side in pixels (default ``data.img_size``, else 640).
        img_dir: image folder of a COCO json given as ``source``.

    Each split the data has gets a dataset reading it with the config's pipeline for that split
    (``val``'s for ``test`` when the config has none; :func:`default_pipeline` when it has neither),
    and the config's ``batch_size`` / ``num_workers``; the config's other splits are dropped (they
    read the config's own dataset). ``data.img_size`` and every transform size become ``img_size``;
    ``data.num_classes``, ``data.class_names`` and each ``num_classes`` under ``model`` the data's.

    Raises:
        DataError: what :func:`resolve_source` refuses; ConfigError: a model without ``num_classes``;
        ValueError: ``img_size`` below 1.
    """
    if not isinstance(source, DatasetSource):
        source = resolve_source(source, img_dir)
    old = cfg.get("data") or ConfigDict()
    size = int(img_size or old.get("img_size") or DEFAULT_IMG_SIZE)
    if size < 1:
        raise ValueError(f"img_size must be >= 1, got {size}")
    data = ConfigDict({k: v for k, v in old.items() if k not in (*SPLITS, "img_size", "num_classes", "class_names")})
    for split in SPLITS:
        if split not in source.splits:
            continue
        loader = old.get(split) or old.get("val" if split == "test" else split) or {}
        node = loader.get("dataset") if isinstance(loader, Mapping) else None
        pipeline = node.get("pipeline") if isinstance(node, Mapping) else None
        dataset = source.dataset(split, pipeline if pipeline else default_pipeline(split, size))
        for key in KEPT_DATASET_ARGS:
            if isinstance(node, Mapping) and key in node and _accepts(dataset[TARGET_KEY], key):
                dataset[key] = node[key]
        data[split] = ConfigDict({**{k: v for k, v in loader.items() if k != "dataset"}, "dataset": dataset})
    data.img_size = size
    data.num_classes = source.num_classes
    data.class_names = list(source.class_names)
    cfg.data = data
    set_img_size(cfg, size)
    keys = set_num_classes(cfg, source.num_classes)
    if not keys:
        raise ConfigError(f"{getattr(cfg, '_filename', 'config')}: the model has no num_classes to set to the "
                          f"data's {source.num_classes} classes (expected model.head.num_classes)")
    return cfg


def set_num_classes(cfg: Mapping[str, Any], num_classes: int) -> list[str]:
    """Set every ``num_classes`` under ``cfg.model`` to ``num_classes``; returns their dotted keys."""
    found = []
    for key, node in _mappings(cfg.get("model"), "model"):
        if "num_classes" in node:
            node["num_classes"] = num_classes
            found.append(f"{key}.num_classes")
    return found


def _mappings(node: Any, key: str) -> Iterator[tuple[str, MutableMapping[str, Any]]]:
    if isinstance(node, MutableMapping):
        yield key, node
        for k, v in node.items():
            if k != TARGET_KEY:
                yield from _mappings(v, f"{key}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _mappings(v, f"{key}.{i}")


# ----- image size ------------------------------------------------------------------------------


def _accepts(target: Any, name: str) -> bool:
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _default_size(target: Any) -> Any:
    """The default of ``target``'s ``size`` argument (None when it has none or no such argument)."""
    try:
        param = inspect.signature(target).parameters.get("size")
    except (TypeError, ValueError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _transforms(pipeline: Any, key: str) -> Iterator[tuple[str, MutableMapping[str, Any]]]:
    """``(dotted key, lazy call)`` of every transform in a pipeline (a list, or a Compose's ``transforms``)."""
    if isinstance(pipeline, (list, tuple)):
        for i, t in enumerate(pipeline):
            yield from _transforms(t, f"{key}.{i}")
    elif isinstance(pipeline, MutableMapping) and TARGET_KEY in pipeline:
        if isinstance(pipeline.get("transforms"), (list, tuple)):
            yield from _transforms(pipeline["transforms"], f"{key}.transforms")
        else:
            yield key, pipeline


def _pipelines(cfg: Mapping[str, Any]) -> Iterator[tuple[str, Mapping, Any]]:
    """``(split, dataset node, pipeline)`` of each split whose dataset takes a pipeline."""
    data = cfg.get("data") or {}
    for split in SPLITS:
        node = (data.get(split) or {}).get("dataset") if isinstance(data.get(split), Mapping) else None
        if isinstance(node, Mapping) and _accepts(node.get(TARGET_KEY), "pipeline"):
            yield split, node, node.get("pipeline")


def _transform_size(t: Mapping) -> tuple[int, int] | None:
    size = t["size"] if "size" in t else _default_size(t[TARGET_KEY])
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def set_img_size(cfg: MutableMapping[str, Any], size: int) -> MutableMapping[str, Any]:
    """``data.img_size = size`` and every pipeline transform's ``size`` (given, or an int default such
    as Mosaic's 640) set to it; returns ``cfg``.

    Args:
        cfg: a loaded config (changed in place).
        size: the image side in pixels.
    """
    cfg.setdefault("data", ConfigDict())["img_size"] = int(size)
    for split, _, pipeline in _pipelines(cfg):
        for _, t in _transforms(pipeline, f"data.{split}.dataset.pipeline"):
            if _transform_size(t) is not None:
                t["size"] = int(size)
    return cfg


def check_img_size(cfg: Mapping[str, Any]) -> None:
    """With ``data.img_size`` set: every pipeline transform's size equals it, and each split's
    pipeline has a transform that brings images to it (else they would train or be evaluated at
    their own size). Raises ConfigError naming the key and both sizes."""
    size = (cfg.get("data") or {}).get("img_size")
    if size is None:
        return
    where = getattr(cfg, "_filename", "config")
    for split, node, pipeline in _pipelines(cfg):
        sized = False
        for key, t in _transforms(pipeline, f"data.{split}.dataset.pipeline"):
            got = _transform_size(t)
            if got is None:
                continue
            sized = True
            if got != (size, size):
                shown = got[0] if got[0] == got[1] else list(got)
                raise ConfigError("{where}: {key} ({name}) has size {shown} but data.img_size is {size}; set one size "
                                  "(data.img_size and each transform's); or pass {img_size} to set every size",
                                  values={"where": where, "key": key, "name": t[TARGET_KEY].__name__, "shown": shown,
                                          "size": size, "img_size": IMG_SIZE_ARGUMENT})
        if not sized:
            name = getattr(node.get(TARGET_KEY), "__name__", "dataset")
            raise ConfigError(f"{where}: data.{split}.dataset ({name}) has no pipeline transform giving "
                              f"data.img_size={size} inputs (images would be used at their own size); "
                              f"add pipeline=[..., L(LetterBox)(size={size})] or keep the config's pipeline")


# ----- class count -----------------------------------------------------------------------------


def declared_class_names(node: Mapping[str, Any]) -> list[str] | None:
    """The class names a dataset config node will have, found without building it (None when it
    cannot be told cheaply: an unknown dataset class, a missing file, a COCO json over 64 MB)."""
    from detkit.data.coco import CocoDataset
    from detkit.data.shapes import SHAPE_CLASSES, ShapesDataset
    from detkit.data.voc import VOC_CLASSES, VocDataset
    from detkit.data.yolo import YoloDataset, load_class_names

    target = node.get(TARGET_KEY)
    if not isinstance(target, type):
        return None
    try:
        if issubclass(target, ShapesDataset):
            return list(SHAPE_CLASSES)
        if issubclass(target, YoloDataset):
            return load_class_names(node["class_names"]) if "class_names" in node else None
        if issubclass(target, VocDataset):
            return list(node.get("class_names") or VOC_CLASSES)
        if issubclass(target, CocoDataset):
            if node.get("class_names"):
                return list(node["class_names"])
            ann = str(node.get("ann_file", ""))
            if not os.path.isfile(ann) or os.path.getsize(ann) > MAX_PEEK_BYTES:
                return None
            return list(coco_class_names(ann))
    except (ValueError, KeyError, OSError):
        return None  # unreadable: building the dataset reports it with the expected layouts
    return None


def _config_counts(cfg: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(what, count)`` for every place of the config that states the class count."""
    counts = [(f"{key}.num_classes is", int(node["num_classes"])) for key, node in _mappings(cfg.get("model"), "model")
              if isinstance(node.get("num_classes"), int)]
    data = cfg.get("data") or {}
    if isinstance(data.get("num_classes"), int):
        counts.append(("data.num_classes is", data["num_classes"]))
    if isinstance(data.get("class_names"), (list, tuple)):
        counts.append(("data.class_names has", len(data["class_names"])))
    return counts


def _check_classes(cfg: Mapping[str, Any], split: str, what: str, names: Sequence[str]) -> None:
    counts = _config_counts(cfg)
    wrong = [(k, n) for k, n in counts if n != len(names)]
    if wrong:
        where = getattr(cfg, "_filename", "config")
        said = ", ".join(f"{k} {n}" for k, n in wrong)
        raise ConfigError("{where}: data.{split}.dataset ({what}) has {n} classes but {said}; set them to the data's; "
                          "or give {data} to take the classes from the data",
                          values={"where": where, "split": split, "what": what, "n": len(names), "said": said,
                                  "data": DATA_ARGUMENT})
    config_names = (cfg.get("data") or {}).get("class_names")
    if isinstance(config_names, (list, tuple)) and list(config_names) != list(names):
        diff = next(i for i, (a, b) in enumerate(zip(config_names, names)) if a != b)
        logger.warning(f"data.{split}.dataset ({what}): class {diff} is named {names[diff]!r} in the data but "
                       f"{config_names[diff]!r} in data.class_names (reports and detections use data.class_names)")


def check_dataset_classes(cfg: Mapping[str, Any], split: str, dataset: Any) -> None:
    """A built dataset's class count against the config's (ConfigError naming the keys and counts).

    Args:
        cfg: the config the dataset was built from.
        split: its split (``"train"``, ``"val"``, ``"test"``), named in the message.
        dataset: the built dataset (its ``class_names``).

    Raises:
        ConfigError: the count differs from ``model.head.num_classes``, ``data.num_classes`` or
            ``data.class_names``.
    """
    names = getattr(dataset, "class_names", None)
    if isinstance(names, (list, tuple)) and names:
        _check_classes(cfg, split, type(dataset).__name__, names)


def check_data_config(cfg: Mapping[str, Any]) -> None:
    """The start-up checks of the data section, before anything is built or written: one image size
    (:func:`check_img_size`) and one class count (each split's dataset, as far as
    :func:`declared_class_names` tells, against the model's and the data section's)."""
    check_img_size(cfg)
    data = cfg.get("data") or {}
    for split in SPLITS:
        node = (data.get(split) or {}).get("dataset") if isinstance(data.get(split), Mapping) else None
        if isinstance(node, Mapping):
            names = declared_class_names(node)
            if names:
                _check_classes(cfg, split, getattr(node[TARGET_KEY], "__name__", "dataset"), names)


# ----- tools -----------------------------------------------------------------------------------


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data PATH``, ``--img-dir DIR`` and ``--img-size N`` (see :func:`apply_data_arguments`)."""
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="train / evaluate on this dataset: a data.yaml, a YOLO root, a COCO json or root, "
                             "a VOC root (classes and splits from the data; docs/custom_data.md)")
    parser.add_argument("--img-dir", default=None, metavar="DIR", help="image folder of a COCO json given as --data")
    parser.add_argument("--img-size", type=int, default=None, metavar="N",
                        help="image side in pixels: data.img_size and every transform size (default the config's)")


def split_dataset_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``key=value`` overrides split into ``(the others, those setting a split's dataset argument)``:
    the second list holds every ``data.<split>.dataset.<...>=...`` (``train``, ``val``, ``test``), in
    their order. With ``--data`` those go to the dataset reading the user's data."""
    splits = tuple(f"data.{split}.dataset." for split in SPLITS)
    others: list[str] = []
    dataset: list[str] = []
    for item in overrides:
        (dataset if item.partition("=")[0].strip().startswith(splits) else others).append(item)
    return others, dataset


def refuse_replaced_overrides(overrides: Sequence[str], data: str) -> None:
    """Refuse the overrides ``--data`` would replace without a word: the classes (``data.num_classes``,
    ``data.class_names``, a ``num_classes`` under ``model``), which come from the data.

    Raises:
        UsageError: naming the first such key and ``--data``.
    """
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in ("data.num_classes", "data.class_names") or (key.startswith("model.") and key.endswith(
                ".num_classes")):
            raise UsageError(f"--cfg-options {key}: --data {data} sets the classes (their count and names) from "
                             f"the data; change them there (its class names), or leave out --data")


def load_data_config(path: str | os.PathLike, overrides: Sequence[str], args: argparse.Namespace,
                     quiet: bool = False) -> ConfigDict:
    """A tool's config: ``load_config(path, overrides)`` then ``--data`` / ``--img-size``
    (:func:`apply_data_arguments`). With ``--data``, the overrides of a split's dataset
    (:func:`split_dataset_overrides`) are applied after the user's data replaced the config's
    dataset, so they are checked against (and kept in) the dataset reading it.

    Args:
        path: the config (a file or a packaged name).
        overrides: the tool's ``--cfg-options``.
        args: a tool's parsed arguments with ``data``, ``img_size`` and ``img_dir``.
        quiet: print nothing.

    Raises:
        UsageError: with ``--data``, an override of the classes (:func:`refuse_replaced_overrides`).
        what :func:`~detkit.config.load_config` and :func:`apply_data_arguments` raise.
    """
    if args.data:
        refuse_replaced_overrides(overrides, args.data)
    others, dataset = split_dataset_overrides(overrides) if args.data else (list(overrides), [])
    return apply_data_arguments(load_config(path, others), args, quiet=quiet, overrides=dataset)


def apply_data_arguments(cfg: ConfigDict, args: argparse.Namespace, quiet: bool = False,
                         overrides: Sequence[str] = ()) -> ConfigDict:
    """``--data`` / ``--img-size`` applied to a loaded config (in place; returned), then
    ``overrides``, then :func:`check_data_config`. Prints one line describing the adopted data
    unless ``quiet``.

    Args:
        cfg: a loaded config.
        args: a tool's parsed arguments with ``data``, ``img_size`` and ``img_dir`` (None when not given).
        quiet: print nothing.
        overrides: ``key=value`` overrides applied after the data was adopted (the ones of
            :func:`split_dataset_overrides` with ``--data``; a call in a value may use detkit's
            names only, not the config file's imports).

    Raises:
        UsageError: ``--img-dir`` without ``--data``, an ``--img-size`` below 1.
        DataError: what :func:`~detkit.data.sources.resolve_source` refuses (``--data`` named).
        ConfigError: what :func:`check_data_config` refuses (its remedy an argument, printed as a flag).
    """
    if args.img_dir and not args.data:
        raise UsageError("--img-dir needs --data (a COCO json)")
    if args.img_size is not None and args.img_size < 1:
        raise UsageError(f"--img-size must be >= 1, got {args.img_size}")
    if args.data:
        try:
            source = resolve_source(args.data, args.img_dir)
        except DataError as e:  # the library names the file; the flag is the tool's to add
            raise DataError(f"--data {cli_message(e)}") from e
        adopt_dataset(cfg, source, img_size=args.img_size)
        if not quiet:
            splits = ", ".join(f"{s} {next(iter(v.kwargs.values()))}" for s, v in source.splits.items())
            print(f"--data {args.data}: {source.fmt}, {source.num_classes} classes "
                  f"({', '.join(source.class_names[:10])}{', ...' if source.num_classes > 10 else ''}); "
                  f"{splits}; img_size {cfg.data.img_size}", flush=True)
    elif args.img_size is not None:
        set_img_size(cfg, args.img_size)
    # what was rebuilt is checked as a loaded config is: arguments against annotations, typed sections
    where = getattr(cfg, "_filename", "<config>") + (f" with --data {args.data}" if args.data else "")
    if overrides:
        apply_overrides(cfg, overrides, source=where)
        check_signatures(cfg, source=where)
    check_call_arguments(cfg, source=where, overrides=overrides)
    check_typed_sections(cfg, source=where)
    check_data_config(cfg)  # its remedies name img_size / data: run_cli prints them as --img-size N / --data PATH
    return cfg
