"""`python tools/convert_weights.py ARGS` is `detkit convert ARGS`: the code is detkit/tools/convert_weights.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.convert_weights", run_name="__main__", alter_sys=True)
