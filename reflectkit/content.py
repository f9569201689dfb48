"""The text of a chat message's content: one reading for every layer.

A message's ``content`` is a string, or (OpenAI's format) a list of parts such as
``{"type": "text", "text": ...}`` and ``{"type": "image_url", ...}``, or None (an assistant turn
that only calls tools). The prompt builder, the fine-tuning export and the embedded model's
worker all need its text; they read it here. The module imports nothing, so the worker process
(:mod:`reflectkit.models.local.engine`) can use it without loading the loop's modules, and
:mod:`reflectkit.messages` re-exports it for the loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["message_text"]


def message_text(content: Any, sep: str = "\n") -> str:
    """The text of ``content``: a string as it is, the ``text`` of each part whose ``type`` is
    ``"text"`` joined by ``sep`` (other parts, such as images, have none), "" for anything else
    (None)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""
