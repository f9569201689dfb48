"""What reflectkit ships besides code: the ``reflectkit/templates`` directory, and the HTML views
(the result card, the live view) rendered from it.

This module imports nothing of reflectkit, so every layer may use it: the prompts
(:mod:`reflectkit.prompts`), the result's ``_repr_html_`` and the notebook display.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["TEMPLATE_DIR", "render_html"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
"""The built-in templates, inside the package in a checkout, an editable install and a wheel."""


@functools.cache
def _html_environment() -> jinja2.Environment:
    # Not the prompt Environment: HTML needs autoescaping, and these templates are not prompts
    # (no user overrides, so no sandbox).
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(name: str, **context: Any) -> str:
    """The built-in HTML template ``name`` rendered with autoescaping on: model text is shown as
    text, never run as markup or script."""
    return _html_environment().get_template(name).render(**context).strip()
