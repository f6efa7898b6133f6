"""MkDocs hooks (mkdocs.yml `hooks:`): pages made from files outside docs/.

``contributing_interfaces.md`` is generated from the repository's CONTRIBUTING-INTERFACES.md (its
``docs/...`` links made relative to the site), and a link to ``../CONTRIBUTING-INTERFACES.md`` in a
page is pointed at it, so docs/design.md reads the same on GitHub and on the site.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"contributing_interfaces.md": ROOT / "CONTRIBUTING-INTERFACES.md"}


def on_files(files: Files, config) -> Files:
    for name, source in GENERATED.items():
        text = re.sub(r"\]\(docs/", "](", source.read_text(encoding="utf-8"))
        files.append(File.generated(config, name, content=text))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    depth = page.file.src_uri.count("/")
    for name, source in GENERATED.items():
        markdown = markdown.replace(f"]({'../' * (depth + 1)}{source.name}", f"]({'../' * depth}{name}")
    return markdown
