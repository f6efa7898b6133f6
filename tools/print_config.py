"""`python tools/print_config.py ARGS` is `detkit print-config ARGS`: the code is detkit/tools/print_config.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.print_config", run_name="__main__", alter_sys=True)
