"""Executable docs: every ```python block in README.md and docs/ runs, and docs/cli.md holds
the CLI's real --help texts.

Blocks fenced as ```python are run; blocks that need a hosted model or show shell commands are
fenced as ```py, ```text or ```sh and are only shown. They run with reflectkit's files in a
directory of the test's own (``throwaway_files``); tests/test_user_data.py checks that they
write none at all where a reader's would go.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from reflectkit.cli.app import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(FENCE.finditer(page.read_text()), start=1):
            found.append((f"{page.relative_to(ROOT)}#{number}", match.group(1)))
    return found


@pytest.mark.usefixtures("throwaway_files")
@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_code_block_runs(where: str, code: str) -> None:
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


CLI_PAGE = ROOT / "docs" / "cli.md"
COMMANDS = [
    [],
    ["run"],
    ["templates"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "export"],
    ["runs", "delete"],
    ["serve"],
    ["batch"],
    ["eval"],
    ["recycle"],
    ["export"],
]


def _cli_page() -> str:
    intro = CLI_PAGE.read_text().split("<!-- help -->")[0]
    parts = [intro, "<!-- help -->\n"]
    for command in COMMANDS:
        result = CliRunner().invoke(
            cli, [*command, "--help"], prog_name="reflectkit", terminal_width=100
        )
        assert result.exit_code == 0
        title = " ".join(["reflectkit", *command])
        parts.append(f"\n## `{title}`\n\n```text\n{result.stdout.rstrip()}\n```\n")
    return "".join(parts)


def test_cli_page_matches_the_help() -> None:
    expected = _cli_page()
    if os.environ.get("REFLECTKIT_UPDATE_DOCS") == "1":
        CLI_PAGE.write_text(expected)
    assert CLI_PAGE.read_text() == expected, "docs/cli.md is stale: REFLECTKIT_UPDATE_DOCS=1"
