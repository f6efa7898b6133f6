"""Necks: take the backbone's levels, return fused levels with ``out_channels``."""

from detkit.models.necks.asff import ASFF
from detkit.models.necks.base import BindableModule
from detkit.models.necks.csp_pan import CSPPAN, CSPPAN_LAYOUTS, CSPPANLayout
from detkit.models.necks.fpn import FPN
from detkit.models.necks.pan import PAN

__all__ = ["ASFF", "CSPPAN", "CSPPAN_LAYOUTS", "CSPPANLayout", "FPN", "PAN", "BindableModule"]
