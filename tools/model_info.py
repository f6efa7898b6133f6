"""`python tools/model_info.py ARGS` is `detkit info ARGS`: the code is detkit/tools/model_info.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.model_info", run_name="__main__", alter_sys=True)
