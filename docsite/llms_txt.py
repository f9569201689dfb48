"""docs/llms.txt, the site's map for readers that are models (https://llmstxt.org), generated
from the navigation in mkdocs.yml so it cannot drift from the site.

Each page is linked as its Markdown source on GitHub, which any model can read without the
site's HTML; the API reference, whose source is only ``:::`` directives, is linked as the
rendered page. Each link's note is the first sentence of the page's first paragraph.

    python -m docsite.llms_txt    # rewrite docs/llms.txt (tests/test_docs_site.py checks it)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mkdocs.yml"
DOCS = ROOT / "docs"
LLMS_TXT = DOCS / "llms.txt"
SOURCE_URL = "https://raw.githubusercontent.com/reflectkit/reflectkit/main/docs/"
RENDERED = {"api.md"}  # pages whose source is directives, linked as the built page
OPTIONAL = {"Benchmarks"}  # what a model may skip when its context is short (llmstxt.org)


class _ConfigLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose ``!!python/...`` tags (the slug function) need not run here."""


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    """mkdocs.yml as plain data."""
    config: dict[str, Any] = yaml.load(path.read_text(), Loader=_ConfigLoader)
    return config


def nav_pages(nav: list[Any]) -> Iterator[tuple[str, str]]:
    """Every (title, file) in the navigation, depth first, in reading order."""
    for entry in nav:
        for title, value in entry.items():
            if isinstance(value, list):
                yield from nav_pages(value)
            else:
                yield title, value


def summary(page: Path) -> str:
    """The first sentence of the page's first paragraph (after its title)."""
    paragraphs = re.split(r"\n\s*\n", page.read_text())
    for paragraph in paragraphs[1:]:
        text = " ".join(paragraph.split())
        if text and not text.startswith(("#", "|", "```", "<", "-", ":::", "!")):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text only
            return _first_sentence(text)
    return ""


def _first_sentence(text: str) -> str:
    """Up to the first full stop, question mark or colon outside parentheses (a sentence may
    hold a parenthesis with its own semicolons and stops)."""
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        at_end = i + 1 == len(text) or text[i + 1].isspace()
        if depth <= 0 and char in ".:?!" and at_end:
            return text[:i]
    return text


def _link(title: str, file: str, site_url: str) -> str:
    url = site_url + file.removesuffix(".md") + "/" if file in RENDERED else SOURCE_URL + file
    note = summary(DOCS / file)
    return f"- [{title}]({url})" + (f": {note}" if note else "")


def render(config: dict[str, Any]) -> str:
    """llms.txt: the name, the summary, then one section per navigation section."""
    site_url = config["site_url"]
    lines = [f"# {config['site_name']}", "", f"> {config['site_description']}", ""]
    lines += [
        "A Python library: a tag protocol (<thinking>, <reflection>, <output>), a LangGraph "
        "generate → critique → revise loop over any LiteLLM model, critics that are models or "
        "code, and edges for LangChain, an OpenAI-compatible proxy, batches, eval and data tools.",
        "",
    ]
    start: list[str] = []
    optional: list[str] = []
    sections: list[str] = []
    for entry in config["nav"]:
        for title, value in entry.items():
            if isinstance(value, list):
                sections += ["", f"## {title}", ""]
                sections += [_link(t, f, site_url) for t, f in nav_pages(value)]
            elif title in OPTIONAL:
                optional.append(_link(title, value, site_url))
            else:
                start.append(_link(title, value, site_url))
    lines += ["## Start here", "", *start, *sections]
    if optional:
        lines += ["", "## Optional", "", *optional]
    return "\n".join(lines) + "\n"


def main() -> None:
    LLMS_TXT.write_text(render(load_config()))


if __name__ == "__main__":
    main()
