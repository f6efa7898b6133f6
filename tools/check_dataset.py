"""`python tools/check_dataset.py ARGS` is `detkit check ARGS`: the code is detkit/tools/check_dataset.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.check_dataset", run_name="__main__", alter_sys=True)
