"""Counting what a dataset skipped, and why: :class:`ProblemLog` (``dataset.problems``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

__all__ = ["MAX_RECORDS", "ProblemLog", "logger"]

logger = logging.getLogger("detkit.data")

# How many problems a ProblemLog keeps with their file path (the counts are always complete).
MAX_RECORDS = 100_000


class ProblemLog:
    """Counts skipped inputs by reason and keeps ``(path, reason)`` records for reports.

    ``path`` says where: a file, ``file:line`` for a label line, ``file (ann 12)`` for a COCO
    annotation. Reasons are short fixed sentences, so counts group by them.

    Example::

        log = ProblemLog("labels/a.txt")
        log.add("label line has 4 fields, expected 5", "labels/a.txt:3")
        log.summary()  # '1 problem(s) in labels/a.txt: 1 x label line has 4 fields, expected 5'
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self.records: list[tuple[str, str]] = []

    def add(self, reason: str, path: str = "", n: int = 1) -> None:
        """Count ``n`` occurrences of ``reason`` at ``path``."""
        if n <= 0:
            return
        self.counts[reason] += n
        if len(self.records) < MAX_RECORDS:
            self.records.append((path, reason if n == 1 else f"{reason} (x{n})"))

    def extend(self, other: ProblemLog) -> None:
        """Add every count and record of ``other``."""
        for reason, n in other.counts.items():
            self.counts[reason] += n
        self.records.extend(other.records[: max(0, MAX_RECORDS - len(self.records))])

    def add_records(self, records: Iterable[tuple[str, str]]) -> None:
        """Add ``(path, reason)`` pairs, one occurrence each."""
        for path, reason in records:
            self.add(reason, path)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    def summary(self) -> str:
        """One line: total and count per reason, most frequent first."""
        where = f" in {self.source}" if self.source else ""
        if not self.counts:
            return f"no problems{where}"
        parts = "; ".join(f"{n} x {reason}" for reason, n in self.counts.most_common())
        return f"{self.total} problem(s){where}: {parts}"

    def table(self) -> list[str]:
        """One line per reason, ``count  reason``, most frequent first (for reports)."""
        width = len(str(max(self.counts.values(), default=0)))
        return [f"{n:>{width}}  {reason}" for reason, n in self.counts.most_common()]

    def log_summary(self) -> None:
        """Log :meth:`summary` once as a warning (nothing when clean), with the first file recorded, so
        the warning says where to look (``detkit check`` lists every one)."""
        if self.counts:
            first = next((f"{path} ({reason})" for path, reason in self.records if path), None)
            where = f"; first: {first}; 'detkit check' lists each one" if first else ""
            logger.warning("%s%s", self.summary(), where)
