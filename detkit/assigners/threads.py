"""How many intra-op threads assignment runs on, and the scoped thread count that applies it.

Candidate-sparse assignment is many small and middle-sized ops (gathers, scatters, segment top-k over
tables of 1e4-1e6 pairs). Each op that torch splits over its intra-op pool is a parallel region that ends
only when every pool thread has run its share; on a machine whose cores are busy (a training run's own
loader workers, other jobs), a pool thread waits for a time slice at every region, and thousands of
regions turn a 0.1 s assignment into seconds (issue 29: 20-40x on 2 busy cores). On one thread no op
waits for another thread, and the sparse forms lose little on a quiet machine (their ops are small).

So every rule's ``assign`` runs with at most :data:`ASSIGN_THREADS` intra-op threads
(:func:`limit_assign_threads`), the caller's count restored on the way out, exceptions included.
:func:`assignment_threads` changes the limit within a block (``None``: the caller's count, the behaviour
before issue 29). Results do not depend on the count (tested: every rule, 1 and 2 threads, bit for bit).

``torch.set_num_threads`` is process-wide: a limit set here holds for every Python thread of the process
while an assignment runs (the trainer assigns in its main thread; data loading runs in worker processes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

import torch

__all__ = ["ASSIGN_THREADS", "assignment_threads", "current_assign_threads", "intra_op_threads",
           "limit_assign_threads"]

ASSIGN_THREADS = 1  # intra-op threads of an assign call (at most; never more than the caller's)
_LIMIT: ContextVar[tuple[int | None] | None] = ContextVar("detkit_assign_threads", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def _check(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"thread count must be a positive int or None, got {threads!r}")


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Within the block, torch runs ops on at most ``threads`` intra-op threads (``None``: unchanged); the
    count in force before is restored on leaving, also when the block raises. Never raises the count.

    Raises:
        ValueError: ``threads`` not a positive int or None.
    """
    _check(threads)
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def assignment_threads(threads: int | None) -> Iterator[None]:
    """Within the block, ``assign`` calls run on at most ``threads`` intra-op threads instead of
    :data:`ASSIGN_THREADS`; ``None`` leaves the caller's count (every op on the whole pool).

    Raises:
        ValueError: ``threads`` not a positive int or None.
    """
    _check(threads)
    token = _LIMIT.set((threads,))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def current_assign_threads() -> int | None:
    """The limit in force: :func:`assignment_threads`' within its block, else :data:`ASSIGN_THREADS`."""
    value = _LIMIT.get()
    return ASSIGN_THREADS if value is None else value[0]


def limit_assign_threads(assign: Callable[P, R]) -> Callable[P, R]:
    """Decorator of a rule's ``assign``: the call runs under ``intra_op_threads(current_assign_threads())``
    (nested calls, e.g. :class:`~detkit.assigners.MinPositives` around a rule, find the limit already set)."""

    @functools.wraps(assign)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        with intra_op_threads(current_assign_threads()):
            return assign(*args, **kwargs)

    return limited
