"""The wheel carries the templates: build it, install it in a fresh venv, render every template.

The fresh venv gets the wheel plus only what rendering needs (jinja2, click), installed
with --no-deps: the point is to prove the templates travel inside the wheel and are found from
site-packages, not to re-resolve LiteLLM's dependency tree (the CI install already does that).
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "reflectkit" / "templates"

CHECK = """
import pathlib, reflectkit, reflectkit.prompts as p
from reflectkit.prompts import Prompts, TEMPLATES, builtin_template_dir
where = builtin_template_dir()
assert where == pathlib.Path(reflectkit.__file__).parent / "templates", where
assert "site-packages" in str(where), where
prompts = Prompts()
prompts.check()
print(len(TEMPLATES), where)
"""


@pytest.mark.slow
def test_an_installed_wheel_finds_and_renders_every_template(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next(dist.glob("reflectkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    templates = sorted(n for n in names if n.startswith("reflectkit/templates/"))
    assert templates == sorted(f"reflectkit/templates/{p.name}" for p in TEMPLATES.iterdir())
    assert "reflectkit/py.typed" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            str(wheel),
            "jinja2",
            "markupsafe",
            "click",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = subprocess.run(
        [str(python), "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    count, where = out.stdout.split()
    # Every prompt template renders; the HTML ones (notebook display) are checked as shipped above.
    prompt_templates = [p for p in TEMPLATES.glob("*.j2") if ".html." not in p.name]
    assert int(count) == len(prompt_templates)
    assert Path(where).is_relative_to(env_dir)
    listing = subprocess.run(
        [str(env_dir / "bin" / "reflectkit"), "templates"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "protocol_system" in listing.stdout
    assert str(env_dir) in listing.stdout
