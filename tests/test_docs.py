"""The documentation site's structure: every page in the nav, every nav entry a page, README links resolve.

`make docs` (in CI after the tests) builds the site with ``mkdocs build --strict``, which checks the links
between pages; these tests need no MkDocs and run with the rest of the suite.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAV_ENTRY = re.compile(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(mkdocs_yml: str) -> list[str]:
    """The ``.md`` files the ``nav:`` section of an mkdocs.yml names, in order."""
    lines = mkdocs_yml.splitlines()
    start = lines.index("nav:")
    pages = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break  # the next top-level key
        m = NAV_ENTRY.match(line)
        if m:
            pages.append(m.group(1))
    return pages


def markdown_links(text: str) -> list[str]:
    """Link and image targets of a markdown text, fenced code blocks left out."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return LINK.findall(text) + IMAGE.findall(text)


def anchor_of(heading: str) -> str:
    """The id Python-Markdown's toc (and GitHub, for these headings) gives a heading."""
    slug = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", slug).strip("-")


def test_nav_pages_parsed_from_a_hand_made_config():
    yml = ("site_name: x\nnav:\n  - Home: index.md\n  - Rules:\n      - ATSS: assigners/atss.md\n  - faq.md\n"
           "plugins:\n  - a.md\n")
    assert nav_pages(yml) == ["index.md", "assigners/atss.md", "faq.md"]


def test_markdown_links_skip_code_and_find_images():
    text = "see [a](a.md#x) and ![p](img/p.png)\n```bash\n[no](b.md)\n```\n[c](https://e.org)"
    assert sorted(markdown_links(text)) == ["a.md#x", "https://e.org", "img/p.png"]


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = nav_pages((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    missing = [p for p in pages if p not in on_disk]
    assert not missing, f"nav entries without a page: {missing}"
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"
    left_out = sorted(on_disk - set(pages))
    assert not left_out, f"docs pages missing from mkdocs.yml's nav: {left_out}"


def test_readme_links_resolve():
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    anchors = {anchor_of(h) for h in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M),
                                                 flags=re.M)}
    links = markdown_links(text)
    assert links, "the README links no page"
    broken = []
    for target in links:
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in anchors:
                broken.append(target)
            continue
        resolved = (readme.parent / path).resolve()
        if not resolved.exists() or ROOT not in resolved.parents:
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {anchor_of(h) for h in headings}:
                broken.append(target)
    assert not broken, f"README links that do not resolve: {broken}"


def test_readme_stays_short():
    # 240 until the recipe table (one row per detector, with its parity figures) joined the configs section
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 260
