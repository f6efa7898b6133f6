"""`python tools/make_shapes.py ARGS` is `detkit make-shapes ARGS`: the code is detkit/tools/make_shapes.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.make_shapes", run_name="__main__", alter_sys=True)
