"""A griffe extension (mkdocs.yml, mkdocstrings' ``extensions``): detkit's docstrings use a few reST
spellings (``:class:`X```, ``:func:`f```, ``text::`` before a literal block) that Markdown would show
as they are; this turns them into Markdown before the API reference renders them. The source is
unchanged."""
from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|py:\w+):`~?([^`]+)`")
LITERAL_INTRO = re.compile(r"(\S)::$", re.M)  # "text::" -> "text:" (the indented block stays code)
ALONE_INTRO = re.compile(r"^\s*::$", re.M)


def to_markdown(text: str) -> str:
    """reST roles as code spans, ``::`` introductions as ``:``; everything else as it is."""
    text = ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    text = LITERAL_INTRO.sub(r"\1:", text)
    return ALONE_INTRO.sub("", text)


class RstToMarkdown(Extension):
    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
