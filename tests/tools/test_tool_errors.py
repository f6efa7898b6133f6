"""Every tool through detkit.cli.run_cli: user mistakes end in exit status 2 and one ``error:`` line
naming what was wrong (argparse's own usage lines for a bad option), never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"


@pytest.fixture
def files(tmp_path):
    """Paths the mistakes point at: a file where a folder is wanted, a JSON that is not COCO, ..."""
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "list.json").write_text(json.dumps([1, 2, 3]))
    (tmp_path / "broken.json").write_text('{"images": [')
    (tmp_path / "no_model.py").write_text("train = dict(epochs=3)\n")
    (tmp_path / "weights.pth").write_bytes(b"")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "yolo_root" / "images").mkdir(parents=True)
    return tmp_path


# (tool, argv with {tmp} for the fixture folder, text the one error line must hold); numeric flags out of
# range are argparse's usage errors: tests/tools/test_inputs_never_outputs.py::test_every_numeric_flag_is_range_checked
MISTAKES = [
    ("print_config", ["{tmp}/nope.py"], "config file not found: {tmp}/nope.py"),
    ("print_config", [str(CFG), "--cfg-options", "train.epochs=1O0"],
     "train.epochs: expected int, got '1O0' (str) (from --cfg-options train.epochs=1O0)"),
    ("print_config", [str(CFG), "--cfg-options", "model.size"], "is not of the form key=value"),
    ("model_info", ["{tmp}/no_model.py"], "no_model.py: config has no key 'model'"),
    ("model_info", [str(CFG), "--cfg-options", "model.backbone.widen=2"], "unexpected argument(s) 'widen'"),
    ("model_info", [str(CFG), "--size", "100"], "multiple"),
    ("kmeans_anchors", ["{tmp}/missing"], "{tmp}/missing: no such file or folder"),
    ("kmeans_anchors", ["{tmp}/a_folder"], "need exactly one instances_*.json"),
    ("kmeans_anchors", ["{tmp}/list.json"], "list.json: not a COCO instances json"),
    ("kmeans_anchors", ["{tmp}/broken.json"], "broken.json: not a COCO instances json (JSONDecodeError: "),
    ("kmeans_anchors", ["{tmp}/list.json", "--num", "4", "--levels", "3"], "--num (4) must be a multiple of --levels"),
    ("model_info", [str(CFG), "--size", "100"], "--size 100 100: the model takes multiples of its largest stride 32"),
    ("make_shapes", ["{tmp}/s", "--train", "0", "--val", "0"], "--train 0 --val 0: nothing to generate"),
    ("infer", [str(CFG), "{tmp}/weights.pth", "{tmp}/a_folder", "--backend", "trt"], "--backend: unknown backend"),
    ("kmeans_anchors", ["{tmp}/yolo_root", "--format", "yolo"], "must hold labels/ and images/"),
    ("browse_dataset", [str(CFG), "--split", "test", "--out", "{tmp}/browse"], "no data.test; splits: "),
    ("browse_dataset", [str(CFG), "--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file, not a folder"),
    ("browse_dataset", [str(CFG), "--cfg-options", "runtime.loggers=['tb']", "--out", "{tmp}/browse"],
     "runtime.loggers[0]: unknown logger 'tb'"),
    ("compare_assigners", [str(CFG), "--assigners", "atss", "nope"], "'nope' is neither a short name"),
    ("compare_assigners", [str(CFG), "--assigners", "ATSSAssigner(top_k=3)"],
     "cannot build ATSSAssigner(top_k): "),
    ("compare_assigners", [str(CFG), "--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file, not a folder"),
    ("ablate_assigners", [str(CFG), "--cfg-options", "train.epochs=1O0", "--work-dir", "{tmp}/ablation"],
     "train.epochs: expected int, got '1O0' (str)"),
    ("ablate_assigners", ["{tmp}/nope.py", "--work-dir", "{tmp}/ablation"], "config file not found"),
    ("demo", ["--epochs", "0", "--work-dir", "{tmp}/demo"], "train.epochs: must be >= 1, got 0"),
    ("demo", ["--work-dir", "{tmp}/a_file"], "--work-dir {tmp}/a_file: is a file, not a folder"),
    ("export", [str(CFG), "{tmp}/missing.pth"], "checkpoint not found: {tmp}/missing.pth"),
    ("export", [str(CFG), "{tmp}/weights.pth", "--format", "tflite"], "unsupported export format 'tflite'"),
    ("export", [str(CFG), "{tmp}/weights.pth", "--out", "{tmp}/a_folder"], "is a folder, expected a file path"),
]


@pytest.mark.parametrize("tool, argv, expected", MISTAKES,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(MISTAKES)])
def test_a_mistake_is_one_error_line_and_status_2(files, capsys, tool, argv, expected):
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    assert load_tool(tool).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected.replace("{tmp}", str(files)) in err[0]


@pytest.mark.parametrize("tool", ["print_config", "model_info", "kmeans_anchors", "browse_dataset",
                                  "compare_assigners", "ablate_assigners", "demo", "export"])
def test_an_unknown_option_is_argparses_usage_error_returned_not_raised(tool, capsys):
    assert load_tool(tool).main(["--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_from_a_shell_the_mistake_is_one_line_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "print_config.py"), str(CFG),
                          "--cfg-options", "train.epochs=1O0"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"error: {CFG}: train.epochs: expected int, got '1O0' (str) "
                          "(from --cfg-options train.epochs=1O0)\n")
