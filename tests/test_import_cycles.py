"""No import cycle among detkit's modules, and the graph code that finds them (benchmarks/code_metrics.py).

An import inside a function still needs the other module at run time: it only hides a cycle from Python, so it
counts; an import under ``if TYPE_CHECKING:`` never runs and does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tools import load_code_metrics

ROOT = Path(__file__).resolve().parents[1]

cm = load_code_metrics()


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_detkit_has_no_import_cycle():
    graph = cm.import_graph(ROOT)
    assert len(graph.modules) > 100  # the package was found
    problems = []
    for component in graph.cycles():
        problems.append(" <-> ".join(component))
        problems += [f"    {i.source} -> {i.target} ({i.path}:{i.line}{', in a function' if i.in_function else ''})"
                     for i in graph.cycle_imports(component)]
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_a_cycle_hidden_in_a_function_is_found_with_its_lines(tmp_path):
    root = _write(tmp_path, {
        "detkit/__init__.py": "",
        "detkit/a.py": "import os\nfrom detkit.b import g\n\ndef f():\n    return g()\n",
        "detkit/b.py": "def g():\n    from detkit.a import f\n    return f\n",
        "detkit/c.py": "from detkit import a\n",
    })
    graph = cm.import_graph(root)
    assert graph.modules == ["detkit", "detkit.a", "detkit.b", "detkit.c"]
    assert graph.edges() == {"detkit": set(), "detkit.a": {"detkit.b"}, "detkit.b": {"detkit.a"},
                             "detkit.c": {"detkit.a"}}
    assert graph.cycles() == [["detkit.a", "detkit.b"]]
    found = graph.cycle_imports(["detkit.a", "detkit.b"])
    assert [(i.source, i.target, i.path, i.line, i.in_function) for i in found] == [
        ("detkit.a", "detkit.b", "detkit/a.py", 2, False), ("detkit.b", "detkit.a", "detkit/b.py", 2, True)]


def test_type_checking_imports_do_not_count_and_relative_imports_resolve(tmp_path):
    root = _write(tmp_path, {
        "detkit/__init__.py": "from detkit.pkg import x\n",
        "detkit/pkg/__init__.py": "from . import x\nfrom .x import X\n",
        "detkit/pkg/x.py": ("from typing import TYPE_CHECKING\nimport typing\nfrom ..util import u\n"
                            "if TYPE_CHECKING:\n    from detkit.pkg.y import Y\nelse:\n    import detkit.other\n"
                            "if typing.TYPE_CHECKING:\n    from . import y\nX = 1\n"),
        "detkit/pkg/y.py": "from .x import X\n",
        "detkit/util.py": "u = 1\n",
        "detkit/other.py": "",
        "detkit/configs/model.py": "from detkit.pkg.y import Y\n",  # a config file, not a module of the graph
    })
    graph = cm.import_graph(root)
    assert "detkit.configs.model" not in graph.modules
    edges = graph.edges()
    assert edges["detkit.pkg.x"] == {"detkit.util", "detkit.other"}  # y only under TYPE_CHECKING; the else runs
    assert edges["detkit.pkg"] == {"detkit.pkg.x"}  # `from . import x` names the submodule
    assert edges["detkit.pkg.y"] == {"detkit.pkg.x"}
    assert graph.cycles() == []


def test_a_longer_cycle_is_one_component_and_a_self_import_is_a_cycle(tmp_path):
    root = _write(tmp_path, {
        "detkit/__init__.py": "",
        "detkit/a.py": "import detkit.b\n",
        "detkit/b.py": "import detkit.c.d\n",
        "detkit/c/__init__.py": "",
        "detkit/c/d.py": "def f():\n    import detkit.a\n",
        "detkit/e.py": "import detkit.e\n",
        "detkit/f.py": "import detkit.a\n",  # into the cycle, not part of it
    })
    assert cm.import_graph(root).cycles() == [["detkit.a", "detkit.b", "detkit.c.d"], ["detkit.e"]]


def test_lines_and_longest_functions(tmp_path):
    source = ('"""Module doc\nover two lines."""\n\n# a comment\nimport os\n\n\n'
              'class A:\n    """Doc."""\n\n    def m(self):\n        def inner():\n            return 1\n'
              '        return inner()\n\n\ndef f():\n    return os.sep\n')
    root = _write(tmp_path, {"detkit/__init__.py": "", "detkit/sub/__init__.py": "x = 1\n", "detkit/m.py": source})
    table = cm.lines_per_package(root)
    assert (table["detkit"].files, table["detkit"].lines, table["detkit"].code) == (2, 18, 8)
    assert (table["detkit/sub"].files, table["detkit/sub"].lines, table["detkit/sub"].code) == (1, 1, 1)
    assert table["detkit (all)"].lines == 19
    assert [(f.name, f.line, f.lines) for f in cm.functions(root)] == [("A.m", 11, 4), ("A.m.inner", 12, 2),
                                                                       ("f", 17, 2)]


def test_report_names_both_checkouts_and_refuses_a_folder_without_the_package(tmp_path, capsys):
    root = _write(tmp_path / "one", {"detkit/__init__.py": "", "detkit/a.py": "import detkit.a\n"})
    text = cm.report([root, root], top=3)
    assert text.count(f"## Import graph: {root}") == 2 and "- detkit.a\n" in text
    assert cm.main([str(tmp_path)]) == 2
    assert "no detkit/ package folder" in capsys.readouterr().err


@pytest.mark.parametrize("module,is_package,level,name,expected", [
    ("detkit.a.b", False, 1, "c", "detkit.a.c"),
    ("detkit.a.b", False, 2, None, "detkit"),
    ("detkit.a", True, 1, "c", "detkit.a.c"),
    ("detkit.a", True, 2, "c", "detkit.c"),
    ("detkit.a.b", False, 0, "os.path", "os.path"),
])
def test_relative_import_resolution(module, is_package, level, name, expected):
    assert cm._resolve(module, is_package, level, name) == expected
