"""`python tools/export.py ARGS` is `detkit export ARGS`: the code is detkit/tools/export.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.export", run_name="__main__", alter_sys=True)
