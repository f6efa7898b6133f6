"""Transcendental functions whose fp32 results do not depend on a tensor's size or the thread split.

Transcendental functions (log, pow) are computed by SIMD code on most elements and scalar code on
loop tails, whose last bits can differ; where a tail falls depends on the tensor's size and the
thread split. Assignment must give the same result whether a value is computed in a full ``B x M x N``
matrix, a chunk of GTs, or a list of candidate pairs, so the assigners use these helpers on every
per-pair tensor: ``+``, ``-``, ``*``, ``/`` and ``sqrt`` are correctly rounded on both paths, and
what these compute in fp64 is rounded to fp32 once.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_INT_POWER", "exact_log", "exact_pow"]

MAX_INT_POWER = 64  # integer exponents up to this are computed by repeated multiplication


def exact_pow(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` (fp32) independent of tensor size and threads.

    Integer exponents in ``[0, MAX_INT_POWER]`` use exponentiation by squaring (exact IEEE products);
    others go through fp64 and round to fp32 (equal except within 1 fp64 ulp of a rounding tie).
    """
    if float(exponent).is_integer() and 0 <= exponent <= MAX_INT_POWER:
        e = int(exponent)
        result = torch.ones_like(x)
        base = x
        while e:
            if e & 1:
                result = result * base
            e >>= 1
            if e:
                base = base * base
        return result
    return x.double().pow(exponent).float()


def exact_log(x: Tensor) -> Tensor:
    """``log(x)`` (fp32) computed in fp64 and rounded, so independent of tensor size and threads."""
    return x.double().log().float()
