"""`python tools/compare_assigners.py ARGS` is `detkit compare ARGS`: the code is detkit/tools/compare_assigners.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.compare_assigners", run_name="__main__", alter_sys=True)
