"""The API reference reads well where users call it: every argument of the public entry points is
documented in its docstring (Google ``Args:`` / ``Attributes:`` sections, which mkdocstrings renders as
tables), and mkdocs.yml keeps mkdocstrings' warnings about undocumented or misnamed arguments on, so
``mkdocs build --strict`` fails on them."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^(\s*)(Args|Arguments|Attributes|Parameters)(?: \(of ``apply``\))?:\s*$")
ENTRY = re.compile(r"^(\**[A-Za-z_]\w*)(?: \([^)]*\))?:\s")

# what users call first (docs/getting_started.md, custom_data.md, configs.md and the API pages' examples)
ENTRY_POINTS = [
    "detkit.config:load_config", "detkit.config:instantiate", "detkit.config:apply_overrides",
    "detkit.config:resolve_name", "detkit.config_files:find_config",
    "detkit.engine.trainer:Trainer", "detkit.engine.trainer:Trainer.save", "detkit.engine.trainer:Trainer.resume",
    "detkit.engine.trainer:build_dataset",
    "detkit.data.sources:resolve_source", "detkit.data.sources:DatasetSource",
    "detkit.data.sources:DatasetSource.dataset",
    "detkit.data.adopt:adopt_dataset", "detkit.data.adopt:apply_data_arguments", "detkit.data.adopt:set_img_size",
    "detkit.data.adopt:default_pipeline",
    "detkit.data:CocoDataset", "detkit.data:YoloDataset", "detkit.data:VocDataset", "detkit.data:ShapesDataset",
    "detkit.data:Mosaic", "detkit.data:MixUp", "detkit.data:RandomFlip", "detkit.data.shapes:make_shapes_dataset",
    "detkit.deploy:load_predictor", "detkit.deploy:export_onnx", "detkit.deploy:build_metadata",
    "detkit.evaluation:COCOEvaluator", "detkit.evaluation:COCOEvaluator.evaluate",
    "detkit.assigners:Assigner.assign", "detkit.boxes:aligned_iou", "detkit.boxes:pairwise_iou",
    "detkit.models.detector:Detector", "detkit.models.detector:Detector.loss",
    "detkit.models.detector:Detector.predict",
]


def documented_names(doc: str) -> set[str]:
    """Names listed in a Google docstring's ``Args:`` / ``Attributes:`` sections (``*args`` as ``args``)."""
    names: set[str] = set()
    indent = None
    for line in inspect.cleandoc(doc).splitlines():
        m = SECTION.match(line)
        if m:
            indent = len(m.group(1))
            continue
        if indent is None:
            continue
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            indent = None  # the section ended
            continue
        if len(line) - len(line.lstrip()) == indent + 4:
            e = ENTRY.match(line.strip())
            if e:
                names.add(e.group(1).lstrip("*"))
    return names


def undocumented(target: str) -> list[str]:
    """Parameters of ``module:qualname`` its docstring does not list (a class: its ``__init__``'s)."""
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    doc = inspect.getdoc(obj) or ""
    function = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and obj.__init__.__doc__ and obj.__init__.__qualname__.startswith(obj.__name__):
        doc += "\n" + inspect.getdoc(obj.__init__)
    params = [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]
    return [p.name for p in params if p.name not in documented_names(doc)]


def test_documented_names_from_a_hand_made_docstring():
    doc = '''Summary.

    Args:
        a: first.
        b (int): second,
            continued: not an entry.
        **extra: more.

    Returns:
        c: not an argument.
    '''
    assert documented_names(doc) == {"a", "b", "extra"}
    assert documented_names("No sections.") == set()
    assert undocumented("tests.test_docs_api:half_documented") == ["b"]
    assert undocumented("tests.test_docs_api:HalfDocumented") == ["size"]


def half_documented(a: int, b: int) -> int:
    """Adds.

    Args:
        a: one.
    """
    return a + b


class HalfDocumented:
    """A class (its ``__init__``'s arguments are checked).

    Args:
        name: documented.
    """

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size


@pytest.mark.parametrize("target", ENTRY_POINTS)
def test_entry_point_documents_every_argument(target):
    assert undocumented(target) == [], f"{target}: arguments missing from the docstring's Args section"


def test_every_rule_documents_its_arguments():
    import detkit.assigners as assigners

    rules = [name for name in assigners.__all__
             if inspect.isclass(getattr(assigners, name)) and hasattr(getattr(assigners, name), "assign")
             and name not in ("Assigner", "TwoFormAssigner")]
    assert len(rules) >= 9
    missing = {name: undocumented(f"detkit.assigners:{name}") for name in rules}
    assert not {k: v for k, v in missing.items() if v}


def test_every_loss_documents_its_arguments():
    import detkit.losses as losses

    classes = [name for name in losses.__all__ if inspect.isclass(getattr(losses, name))]
    assert len(classes) >= 6
    missing = {name: undocumented(f"detkit.losses:{name}") for name in classes}
    assert not {k: v for k, v in missing.items() if v}


def test_mkdocs_keeps_the_docstring_warnings_on():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "warn_unknown_params: false" not in text and "warn_missing_types: false" not in text
