"""The ``detkit`` command (also ``python -m detkit``): one subcommand per tool in ``detkit/tools/``.

    detkit train yolov8n_tal.py --data path/to/data.yaml
    detkit test CONFIG CHECKPOINT
    detkit configs                      # the configs shipped with the package
    detkit --debug train ...            # a user error shows its traceback too (as ``train ... --debug``)

Each subcommand runs the same code as the repository's ``tools/<name>.py`` (``detkit compare`` is
``tools/compare_assigners.py``), with the same arguments and exit statuses; ``detkit CMD --help``
prints its help.
"""

from __future__ import annotations

import contextlib
import runpy
import sys
from collections.abc import Sequence

from detkit.cli import debugging, run_cli

# subcommand -> (module in detkit.tools, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a detector from a config"),
    "test": ("test", "evaluate a checkpoint (COCO box AP)"),
    "infer": ("infer", "detect objects in images, folders or videos"),
    "export": ("export", "export a trained detector to ONNX"),
    "compare": ("compare_assigners", "compare assigners on a dataset's ground truth, no training"),
    "ablate": ("ablate_assigners", "train one model per assigner over seeds; a table with intervals"),
    "check": ("check_dataset", "report every problem in a dataset"),
    "convert": ("convert_weights", "convert another toolkit's weights (Ultralytics) to a detkit checkpoint"),
    "browse": ("browse_dataset", "draw dataset samples after the training pipeline"),
    "info": ("model_info", "parameters and FLOPs of a config's model"),
    "print-config": ("print_config", "print a config after inheritance and overrides"),
    "anchors": ("kmeans_anchors", "anchor sizes for a dataset by k-means"),
    "make-shapes": ("make_shapes", "write the synthetic shapes dataset"),
}


def usage() -> str:
    """The command's help: every subcommand with its line."""
    from detkit import __version__

    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    rows.append(f"  {'configs':<{width}}  list the configs shipped with detkit")
    return (f"detkit {__version__}: YOLO-style detection with swappable label assignment\n\n"
            "usage: detkit [--debug] COMMAND [ARGS ...]   (detkit COMMAND --help for its arguments)\n"
            "  --debug: a user error (exit status 2) shows its traceback too\n\ncommands:\n"
            + "\n".join(rows))


def _print_configs() -> None:
    from detkit.config_files import config_dir, list_configs

    print(f"# {config_dir()}  (load one by name: detkit train NAME.py, or detkit://NAME.py)")
    print("\n".join(list_configs()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``detkit COMMAND ARGS``; returns the exit status (0, 2 for an unknown command, 141 when
    the reader of its output closed it early: ``detkit configs | head -2``, :func:`detkit.cli.run_cli`)."""
    status = [0]

    def job() -> None:
        status[0] = _main(argv)

    return run_cli(job) or status[0]


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = bool(args) and args[0] == "--debug"  # detkit --debug COMMAND ...: the command's --debug
    if debug:
        args = args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from detkit import __version__

        print(f"detkit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name == "configs":
        _print_configs()
        return 0
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join([*COMMANDS, 'configs'])}", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    sys.argv = [f"detkit {name}", *rest]  # argparse's usage lines say "detkit NAME"
    try:
        with debugging() if debug else contextlib.nullcontext():
            runpy.run_module(f"detkit.tools.{module}", run_name="__main__")
    except SystemExit as e:  # every tool leaves through sys.exit(status)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
