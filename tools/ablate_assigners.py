"""`python tools/ablate_assigners.py ARGS` is `detkit ablate ARGS`: the code is detkit/tools/ablate_assigners.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.ablate_assigners", run_name="__main__", alter_sys=True)
