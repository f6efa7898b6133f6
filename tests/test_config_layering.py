"""The config layer names no detkit class by a string, and sits above what it checks a config with.

``detkit.config_checks`` holds the tables of which class checks which section (``TYPED_SECTIONS``) and which
function expands a component named by a string (``COMPONENT_ARGUMENTS``) as the classes and functions themselves.
That works only while the settings classes and the assigner presets never import ``detkit.config`` (directly, in
a function, or through a package ``__init__`` Python runs first): those are checked on the import graph of the
source, and each module is imported alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tools import load_code_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIG_LAYER = ("detkit/config.py", "detkit/schema.py", "detkit/lazy.py", "detkit/config_checks.py")
# A detkit class named by its dotted path anywhere in a string (``"detkit.engine.settings.TrainSettings"``).
CLASS_PATH = re.compile(r"\bdetkit(?:\.[a-z_][a-z0-9_]*)+\.[A-Z]\w*")
DOTTED = re.compile(r"detkit(?:\.[A-Za-z_]\w*)+")
# Modules below the config loader: they must not reach detkit.config (config_checks imports the first three).
BELOW_CONFIG = ("detkit.engine.settings", "detkit.data.settings", "detkit.assigners.presets", "detkit.schema",
                "detkit.lazy")




def _is_module(name: str) -> bool:
    """A module or package of this checkout's source (nothing is imported)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def named_by_string(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant of ``source`` (docstrings apart) that names something of detkit
    that is not a module by its dotted path: a class anywhere in the string, or the whole string a dotted path
    to a function or other attribute (``"detkit.assigners.presets.assigner_component"``)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        if CLASS_PATH.search(text) or (DOTTED.fullmatch(text) and not _is_module(text)):
            found.append((node.lineno, text))
    return found


def test_the_scan_finds_classes_and_functions_named_by_path_and_leaves_modules_and_docstrings():
    source = '''"""Docs may cite :class:`detkit.engine.settings.TrainSettings`."""
SECTIONS = {"train": "detkit.engine.settings.TrainSettings"}
COMPONENTS = {"assigner": "detkit.assigners.presets.assigner_component"}
MESSAGE = f"see detkit.data.settings.DataSettings for {1}"
SEARCH = ("detkit.assigners", "detkit.engine.trackers", "torch.optim")


def f():
    """Nor is :func:`detkit.config.load_config` in a docstring a name."""
    return "detkit.engine.trackers"
'''
    assert named_by_string(source) == [(2, "detkit.engine.settings.TrainSettings"),
                                       (3, "detkit.assigners.presets.assigner_component"),
                                       (4, "see detkit.data.settings.DataSettings for ")]


@pytest.mark.parametrize("path", CONFIG_LAYER)
def test_the_config_layer_names_no_detkit_class_by_a_string(path):
    assert named_by_string((ROOT / path).read_text(encoding="utf-8")) == []


def test_the_section_and_component_tables_hold_the_classes_themselves():
    from detkit import config_checks
    from detkit.assigners.presets import assigner_component
    from detkit.data.settings import DataSettings
    from detkit.engine.settings import RuntimeSettings, ScheduleSettings, TrainSettings

    sections, components = config_checks.TYPED_SECTIONS, config_checks.COMPONENT_ARGUMENTS
    assert sections == {"train": TrainSettings, "schedule": ScheduleSettings, "runtime": RuntimeSettings,
                        "data": DataSettings}
    assert components == {"assigner": assigner_component}


def _reached(edges: dict[str, set[str]], start: str) -> dict[str, str | None]:
    """Every module importing ``start`` runs, each with the module that imported it: the imports of the graph
    (function-level ones included) and, as Python does, the ``__init__`` of every package above a module."""
    parent: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        packages = {".".join(parts[:i]) for i in range(1, len(parts))} & edges.keys()
        for nxt in sorted(edges.get(module, set()) | packages):
            if nxt not in parent:
                parent[nxt] = module
                todo.append(nxt)
    return parent


def test_what_the_config_checks_import_never_reaches_the_config_loader():
    cm = load_code_metrics()
    edges = cm.import_graph(ROOT).edges()
    assert "detkit.config_checks" in edges["detkit.config"]
    assert {"detkit.engine.settings", "detkit.data.settings", "detkit.assigners.presets"} <= \
        edges["detkit.config_checks"]
    problems = []
    for start in BELOW_CONFIG:
        parent = _reached(edges, start)
        for above in ("detkit.config", "detkit.config_checks"):
            if above in parent:
                chain = [above]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])  # type: ignore[arg-type]
                problems.append(" <- ".join(chain))
    assert not problems, "imported below the config loader:\n" + "\n".join(problems)
    assert _reached(edges, "detkit.lazy").keys() <= {"detkit", "detkit.lazy", "detkit.errors"}


def test_the_reach_follows_package_inits_and_function_imports():
    edges = {"detkit": set(), "detkit.a": {"detkit.config"}, "detkit.a.b": set(), "detkit.config": set(),
             "detkit.c": {"detkit.a.b"}}
    assert _reached(edges, "detkit.c") == {"detkit.c": None, "detkit.a.b": "detkit.c", "detkit": "detkit.c",
                                           "detkit.a": "detkit.a.b", "detkit.config": "detkit.a"}


@pytest.mark.slow
def test_each_module_of_the_config_layer_imports_alone():
    modules = ["detkit.lazy", "detkit.schema", "detkit.config", "detkit.config_checks", "detkit.engine.settings",
               "detkit.data.settings", "detkit.assigners.presets"]
    runs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for m in modules}
    failed = {}
    for module, run in runs.items():
        _, err = run.communicate(timeout=300)
        if run.returncode:
            failed[module] = err.strip().splitlines()[-1]
    assert not failed
