"""End-to-end demo (placeholder until the assigner-comparison work lands)."""

import sys

print("detkit demo: not built yet -- the shapes-set training demo lands with the assigner-comparison work.")
sys.exit(0)
