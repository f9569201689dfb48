"""A griffe extension: Sphinx roles in docstrings become cross-references on the site.

reflectkit's docstrings name other objects the way Sphinx does (``:class:`~reflectkit.RunError```),
which reads well in ``help()`` and in editors; mkdocstrings renders Markdown and would print the
role as text. This turns each role into an optional autorefs link: a link when the object is on
the site, plain code when it is not (a private helper, a LangChain class), so the strict build
fails on broken page links and missing ``:::`` targets, not on a docstring naming an internal.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):`(~?)([\w.]+?)(\(\))?`")
PACKAGE = "reflectkit"


def _identifier(name: str, obj: griffe.Object) -> str:
    """The object a role names: a dotted name as given, a bare one looked up in the
    docstring's own module, else in the package (where every public name is re-exported)."""
    if "." in name and name.split(".")[0] == PACKAGE:
        return name
    if "." in name:  # Class.method, relative to the docstring's module
        return f"{obj.module.path}.{name}"
    if name in obj.module.members:
        return f"{obj.module.path}.{name}"
    return f"{PACKAGE}.{name}"


def to_autorefs(text: str, obj: griffe.Object) -> str:
    """``text`` with each Sphinx role replaced by an optional cross-reference."""

    def replace(match: re.Match[str]) -> str:
        tilde, name, call = match.groups()
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + (call or "")
        identifier = _identifier(name, obj)
        return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

    return ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe reads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_autorefs(obj.docstring.value, obj)
