"""Every command shown in the README and the getting-started pages still parses, so the docs cannot drift.

The fenced shell blocks of the pages below are read; each ``detkit COMMAND ...``, ``python -m detkit ...`` or
``python tools/NAME.py ...`` line (continuations joined) is handed to that tool's own argument parser, which
is stopped right after parsing (no work is done): an unknown flag, a removed subcommand or a missing
argument fails here. The assigners it names must build, the config it names must be found (a path or a
packaged config), and its ``--cfg-options`` must load onto it (``load_config``, which checks every key and
value); ``make TARGET`` lines must name a Makefile target. Placeholders in capitals (``CONFIG``,
``CHECKPOINT``) are left unchecked.

The commands of Getting started and Custom data also RUN, in page order, on a 6-image data.yaml export
(``test_quick_documented_commands_run``): the page's dataset and photo paths are replaced with the test's, a
training is one epoch at 64 px on the CPU, a comparison two images; a long command (ablate, export, training on
a config's own COCO) runs as ``--help``. Each must exit 0 and print its expected line (``EXPECT``).
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/getting_started.md", "docs/custom_data.md", "docs/configs.md",
         "docs/comparing_assigners.md", "docs/assigners/index.md", "docs/assigners/min_positives.md"]
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)


class Parsed(BaseException):
    """Raised by the patched parser: parsing succeeded, stop before the tool does any work."""

    def __init__(self, namespace: argparse.Namespace):
        super().__init__()
        self.namespace = namespace


def shell_commands(text: str) -> list[str]:
    """The command lines of a markdown text's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def tool_argv(command: str) -> list[str] | None:
    """``[subcommand, *args]`` of a detkit command line, None for any other command."""
    from detkit.__main__ import COMMANDS

    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 ...
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "detkit":
        return words[1:]
    if Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "detkit"]:
        return words[3:]
    if Path(words[0]).name.startswith("python") and len(words) > 1 and words[1].startswith("tools/"):
        module = Path(words[1]).stem
        names = {mod: name for name, (mod, _) in COMMANDS.items()}
        return [names.get(module, module), *words[2:]]
    return None


def parse_only(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace | None:
    """Run ``detkit ARGV`` until its parser has parsed; the namespace (None for ``configs`` and ``--help``)."""
    from detkit.__main__ import COMMANDS, main

    assert argv and argv[0] in [*COMMANDS, "configs", "--help"], f"no such detkit command: {argv[:1]}"
    if argv[0] in ("configs", "--help"):
        assert len(argv) == 1, f"detkit {argv[0]} takes no arguments: {argv}"
        return None
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # detkit.__main__.main sets it
    try:
        status = main(argv)
    except Parsed as done:
        return done.namespace
    raise AssertionError(f"detkit {shlex.join(argv)}: the parser refused it (exit status {status})")


def collected() -> list[tuple[str, str]]:
    return [(page, c) for page in PAGES for c in shell_commands((ROOT / page).read_text(encoding="utf-8"))]


def test_shell_commands_read_from_a_hand_made_page():
    text = ("text\n```bash\nmake demo   # comment\n# alone\n"
            "detkit train a.py \\\n    --cfg-options 'x=MaxIoU(a=1, b=2)'\n"
            "```\n```python\nnot = 'a command'\n```\n")
    assert shell_commands(text) == ["make demo", "detkit train a.py --cfg-options 'x=MaxIoU(a=1, b=2)'"]
    assert tool_argv("python tools/compare_assigners.py c.py --images 2") == ["compare", "c.py", "--images", "2"]
    assert tool_argv("OMP_NUM_THREADS=1 python -m detkit check d") == ["check", "d"]
    assert tool_argv("make test") is None


def test_a_drifted_flag_is_caught(monkeypatch):
    with pytest.raises(AssertionError, match="refused"):
        parse_only(["train", "configs/shapes_atss.py", "--no-such-flag"], monkeypatch)


def test_the_pages_show_commands():
    pages = {page for page, _ in collected()}
    assert {"README.md", "docs/getting_started.md", "docs/custom_data.md"} <= pages


@pytest.mark.slow
def test_every_documented_command_parses(monkeypatch):
    from detkit.assigners.branches import split_pair
    from detkit.assigners.presets import build_preset
    from detkit.config import load_config
    from detkit.config_files import find_config

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    checked, problems = 0, []
    for page, command in collected():
        words = shlex.split(command)
        if words[0] == "make":
            missing = [t for t in words[1:] if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
            problems += [f"{page}: {command}: no Makefile target {t}" for t in missing]
            checked += 1
            continue
        argv = tool_argv(command)
        if argv is None:
            continue
        checked += 1
        try:
            ns = parse_only(argv, monkeypatch)
        except AssertionError as e:
            problems.append(f"{page}: {e}")
            continue
        for entry in getattr(ns, "assigners", None) or []:
            for name in split_pair(entry) or [entry]:  # a pair O2M:O2O names each branch's rule (--branch both)
                if name != "config":
                    try:
                        build_preset(name)
                    except Exception as e:  # noqa: BLE001
                        problems.append(f"{page}: {command}: assigner {name!r}: {e}")
        config = getattr(ns, "config", None)
        configs = config if isinstance(config, list) else [config]
        for cfg in configs:
            if not isinstance(cfg, str) or cfg.isupper() or cfg.startswith("work_dirs/"):
                continue  # a placeholder, or a run's config.py (test_quick_documented_commands_run makes one)
            try:
                load_config(find_config(cfg), list(getattr(ns, "cfg_options", None) or []))
            except Exception as e:  # noqa: BLE001 - every failure is a drifted command
                problems.append(f"{page}: {command}: {type(e).__name__}: {e}")
    assert checked >= 10
    assert not problems, "\n".join(problems)


# --- the quick commands of the pages a newcomer follows, run for real -------------------------------------------

RUN_PAGES = ["docs/getting_started.md", "docs/custom_data.md"]
# the pages' placeholder paths -> what they become in the test folder
DATA_PATHS = ("datasets/mydata/data.yaml", "~/exports/mydata/data.yaml", "mydata/data.yaml")
PHOTOS = "photos/"
RUN = {"train", "test", "infer", "compare", "check", "print-config", "info", "configs", "--help"}  # others: --help
FAST = ["train.epochs=1", "train.eval_interval=1", "train.checkpoint.interval_iters=0", "data.train.batch_size=2",
        "schedule.lr.warmup_iters=1", "runtime.plot_interval=0", "runtime.loggers=[]", "data.train.num_workers=0",
        "data.val.num_workers=0"]
IMG_SIZE = "64"
# a line each command's output must hold
EXPECT = {"train": r"outputs in \S+", "test": r"Average Precision +\(AP\) @\[ IoU=0\.50:0\.95",
          "infer": r"\d+ image\(s\)/frame\(s\), \d+ detections .*written to", "check": r"\d+ usable images",
          "compare": r"\| *atss *\|", "print-config": r"^model = ", "info": r"param", "configs": r"^yolov8n_tal\.py$",
          "--help": r"^usage: "}


def set_flag(argv: list[str], flag: str, value: str | None = None) -> list[str]:
    """``argv`` with ``flag`` (and its one value) set to ``value``: replaced where present, else appended."""
    if flag in argv:
        if value is not None:
            argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag] if value is None else [*argv, flag, value]


def add_cfg_options(argv: list[str], options: list[str]) -> list[str]:
    """``options`` added to the command's ``--cfg-options`` (after its own, so they win), or as a new one."""
    if "--cfg-options" not in argv:
        return [*argv, "--cfg-options", *options]
    i = argv.index("--cfg-options") + 1
    while i < len(argv) and not argv[i].startswith("--"):
        i += 1
    return [*argv[:i], *options, *argv[i:]]


def runnable(argv: list[str], data: str) -> list[str]:
    """A documented ``detkit`` argv made quick: the page's dataset and photo paths replaced with the test's,
    one epoch of a few images at 64 px on the CPU; a long command (ablate, export, a training on the config's own
    dataset: COCO) becomes its ``--help``."""
    sub = argv[0]
    if sub not in RUN or (sub == "train" and "--data" not in argv):
        return [sub, "--help"]
    argv = [data if a in DATA_PATHS else "photos" if a == PHOTOS else a for a in argv]
    if sub == "train":
        argv = set_flag(set_flag(set_flag(argv, "--device", "cpu"), "--no-progress"), "--img-size", IMG_SIZE)
        if "--resume" not in argv:
            argv = set_flag(argv, "--overwrite")  # a page's later train command reuses an earlier one's work dir
        argv = add_cfg_options(argv, FAST)
    elif sub == "test":
        argv = set_flag(set_flag(argv, "--device", "cpu"), "--no-progress")
        if "--data" in argv:
            argv = set_flag(argv, "--img-size", IMG_SIZE)
        argv = add_cfg_options(argv, ["data.val.num_workers=0"])
    elif sub == "infer":
        argv = set_flag(argv, "--device", "cpu")
    elif sub == "compare":
        argv = set_flag(argv, "--images", "2")
        if "--data" in argv:
            argv = set_flag(argv, "--img-size", IMG_SIZE)
    return argv


def test_runnable_makes_a_documented_command_quick():
    argv = runnable(["train", "yolov8n_tal.py", "--data", "mydata/data.yaml", "--img-size", "640",
                     "--cfg-options", "train.epochs=100", "--seed", "1"], "/t/data.yaml")
    assert argv == ["train", "yolov8n_tal.py", "--data", "/t/data.yaml", "--img-size", "64", "--cfg-options",
                    "train.epochs=100", *FAST, "--seed", "1", "--device", "cpu", "--no-progress", "--overwrite"]
    assert runnable(["train", "yolov8n_tal.py"], "d.yaml") == ["train", "--help"]
    assert runnable(["ablate", "c.py", "--seeds", "3"], "d.yaml") == ["ablate", "--help"]
    assert runnable(["infer", "best.pth", "photos/", "--out", "o"], "d") == ["infer", "best.pth", "photos", "--out",
                                                                              "o", "--device", "cpu"]


@pytest.mark.slow
def test_quick_documented_commands_run(tmp_path, monkeypatch, capsys):
    """The Getting started and Custom data commands, in page order, on a 6-image data.yaml export:
    exit status 0 and the line each command is expected to print."""
    import shutil

    from detkit.__main__ import main
    from tests.tools.test_own_data import roboflow_export

    data = str(roboflow_export(tmp_path / "mydata"))
    (tmp_path / "photos").mkdir()
    for image in sorted((tmp_path / "mydata" / "valid" / "images").iterdir()):
        shutil.copy(image, tmp_path / "photos")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main sets it
    # the run report's PNGs (5 s a run; tests/engine/test_run_report.py covers them) are left out
    monkeypatch.setattr("detkit.engine.trainer.report_training_run", lambda trainer, strict=False: [])
    ran, problems = [], []
    for page in RUN_PAGES:
        work = tmp_path / Path(page).stem
        work.mkdir()
        (work / "configs").symlink_to(ROOT / "configs")
        (work / "photos").symlink_to(tmp_path / "photos")
        monkeypatch.chdir(work)  # each page's work_dirs/ from scratch
        for command in shell_commands((ROOT / page).read_text(encoding="utf-8")):
            argv = tool_argv(command)
            if argv is None or any(re.fullmatch(r"[A-Z_]+", a) for a in argv):  # make, or CONFIG placeholders
                continue
            argv = runnable(argv, data)
            if (page, argv) in ran:
                continue  # the same command again (a page's two forms of one line)
            ran.append((page, argv))
            status = main(argv)
            captured = capsys.readouterr()
            output = captured.out + captured.err
            if status != 0:
                problems.append(f"{page}: {command}\n  ran: detkit {shlex.join(argv)}\n  exit status {status}:\n"
                                + output[-1500:])
                continue
            expected = EXPECT["--help" if "--help" in argv else argv[0]]
            if not re.search(expected, output, re.M):
                problems.append(f"{page}: detkit {shlex.join(argv)}: no line matching {expected!r} in:\n"
                                + output[-1500:])
    assert not problems, "\n\n".join(problems)
    assert {"train", "test", "infer", "check", "compare"} <= {argv[0] for _, argv in ran if "--help" not in argv}
    assert sum(argv[0] == "train" and "--help" not in argv for _, argv in ran) >= 4  # both pages' and the swaps' runs
