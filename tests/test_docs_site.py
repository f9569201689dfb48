"""The documentation site (mkdocs.yml): every page is reachable from the navigation, the
navigation names only pages that exist, and docs/llms.txt is generated from it and current.

The strict build itself (broken links, missing API references) runs in CI as part of the
README's test command (`mkdocs build --strict`), not here.
"""

from __future__ import annotations

import os
from pathlib import Path

from docsite.llms_txt import LLMS_TXT, load_config, nav_pages, render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_page_is_in_the_navigation() -> None:
    """A page added to docs/ needs its line in mkdocs.yml's nav, or readers of the site never
    find it."""
    in_nav = {file for _, file in nav_pages(load_config()["nav"])}
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert pages - in_nav == set(), "add these pages to nav in mkdocs.yml"


def test_the_navigation_names_only_pages_that_exist() -> None:
    files = [file for _, file in nav_pages(load_config()["nav"])]
    assert [file for file in files if not (DOCS / file).is_file()] == []
    assert len(files) == len(set(files)), "a page is in the navigation twice"


def test_llms_txt_is_current() -> None:
    expected = render(load_config())
    if os.environ.get("REFLECTKIT_UPDATE_DOCS") == "1":
        LLMS_TXT.write_text(expected)
    assert LLMS_TXT.read_text() == expected, "docs/llms.txt is stale: python -m docsite.llms_txt"
    assert "[API reference](https://reflectkit.github.io/reflectkit/api/)" in expected
