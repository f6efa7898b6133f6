"""Every command shown in the README and the getting-started pages still parses, so the docs cannot drift.

The fenced shell blocks of the pages below are read; each ``detkit COMMAND ...``, ``python -m detkit ...`` or
``python tools/NAME.py ...`` line (continuations joined) is handed to that tool's own argument parser, which
is stopped right after parsing (no work is done): an unknown flag, a removed subcommand or a missing
argument fails here. The assigners it names must build, the config it names must be found (a path or a
packaged config), and its ``--cfg-options`` must load onto it (``load_config``, which checks every key and
value); ``make TARGET`` lines must name a Makefile target. Placeholders in capitals (``CONFIG``,
``CHECKPOINT``) are left unchecked.
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
        for name in getattr(ns, "assigners", None) or []:
            if name != "config":
                try:
                    build_preset(name)
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{page}: {command}: assigner {name!r}: {e}")
        config = getattr(ns, "config", None)
        configs = config if isinstance(config, list) else [config]
        for cfg in configs:
            if not isinstance(cfg, str) or cfg.isupper():
                continue
            try:
                load_config(find_config(cfg), list(getattr(ns, "cfg_options", None) or []))
            except Exception as e:  # noqa: BLE001 - every failure is a drifted command
                problems.append(f"{page}: {command}: {type(e).__name__}: {e}")
    assert checked >= 10
    assert not problems, "\n".join(problems)
