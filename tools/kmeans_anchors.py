"""`python tools/kmeans_anchors.py ARGS` is `detkit anchors ARGS`: the code is detkit/tools/kmeans_anchors.py."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install
runpy.run_module("detkit.tools.kmeans_anchors", run_name="__main__", alter_sys=True)
