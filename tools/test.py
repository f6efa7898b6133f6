"""`python tools/test.py ARGS` is `detkit test ARGS`: the code is detkit/tools/test.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.test", run_name="__main__", alter_sys=True)
