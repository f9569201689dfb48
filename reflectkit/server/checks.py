"""Checks of a chat request's messages and parameters, before anything is sent upstream.

A client's mistake must be the client's 400, at once: sent on, it would be paid for, retried as
if the upstream had failed (LiteLLM reports some refusals of its own as connection errors) and
answered with a 502, or fail later in the critic. So the fields the proxy forwards are checked
against what the OpenAI API accepts: numbers finite and in range, known ``response_format``
types, tools and tool calls well formed, tool results answering a call, roles and content parts
of the right kinds. Fields the upstream may know better (a model's own ``reasoning_effort``
values, the keys of a JSON schema) are checked for their type only.

Every refusal is an :class:`Invalid` naming the field (OpenAI's ``param``, e.g.
``messages[2].tool_calls[0].function.name``); :mod:`reflectkit.server.protocol` turns it into
the 400.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_MODEL_CHARS", "Invalid", "check_messages", "check_params"]

MAX_MODEL_CHARS = 256
"""The longest model name a request may ask for (it is echoed in errors and logs)."""

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_PARTS = {
    "system": {"text"},
    "developer": {"text"},
    "user": {"text", "image_url", "input_audio", "file"},
    "assistant": {"text", "refusal"},
    "tool": {"text"},
    "function": {"text"},
}
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_TOOL_CHOICES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_IMAGE_DETAIL = ("auto", "low", "high")

Message = dict[str, Any]


class Invalid(ValueError):
    """A request field the proxy refuses: ``message`` says why, ``param`` names the field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"'{where}' must be an object, not {_kind(value)}", where)
    return value


def _string(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise Invalid(f"'{where}' must be a string, not {_kind(value)}", where)
    if not empty and not value.strip():
        raise Invalid(f"'{where}' cannot be empty", where)
    return value


def _text(value: Any, where: str) -> None:
    _string(value, where)


def _optional_string(holder: Mapping[str, Any], key: str, where: str) -> None:
    if holder.get(key) is not None:
        _string(holder[key], f"{where}.{key}")


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise Invalid(f"'{where}' must be a boolean, not {_kind(value)}", where)


def _choice(value: Any, where: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise Invalid(f"'{where}' must be one of {shown}", where)


def _number(value: Any, where: str, low: float, high: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise Invalid(f"'{where}' must be {kind}, not {_kind(value)}", where)
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise Invalid(f"'{where}' must be {kind} from {low:g} to {high:g}", where)


# Parameters


def _in(low: float, high: float, integer: bool = False) -> Callable[[Any, str], None]:
    return lambda value, where: _number(value, where, low, high, integer=integer)


def _stop(value: Any, where: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise Invalid(f"'{where}' must be a string or a non-empty array of strings", where)
    for index, item in enumerate(value):
        _string(item, f"{where}[{index}]")


def _logit_bias(value: Any, where: str) -> None:
    for token, bias in _object(value, where).items():
        if not (token.isascii() and token.lstrip("-").isdigit()):
            raise Invalid(f"'{where}' keys must be token ids, not {token[:40]!r}", where)
        _number(bias, f"{where}.{token}", -100, 100)


def _function(value: Any, where: str) -> None:
    function = _object(value, where)
    _string(function.get("name"), f"{where}.name", empty=False)
    _optional_string(function, "description", where)
    if function.get("parameters") is not None:
        _object(function["parameters"], f"{where}.parameters")
    if function.get("strict") is not None:
        _boolean(function["strict"], f"{where}.strict")


def _tools(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise Invalid(f"'{where}' must be an array of tools, not {_kind(value)}", where)
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        tool = _object(item, at)
        _choice(tool.get("type"), f"{at}.type", ("function", "custom"))
        if tool["type"] == "function":
            _function(tool.get("function"), f"{at}.function")
        else:
            _string(_object(tool.get("custom"), f"{at}.custom").get("name"), f"{at}.custom.name")


def _tool_choice(value: Any, where: str) -> None:
    if isinstance(value, str):
        _choice(value, where, _TOOL_CHOICES)
        return
    choice = _object(value, where)
    _string(choice.get("type"), f"{where}.type", empty=False)
    if choice["type"] == "function":
        name = _object(choice.get("function"), f"{where}.function").get("name")
        _string(name, f"{where}.function.name", empty=False)


def _response_format(value: Any, where: str) -> None:
    form = _object(value, where)
    _choice(form.get("type"), f"{where}.type", _RESPONSE_FORMATS)
    if form["type"] != "json_schema":
        return
    schema = _object(form.get("json_schema"), f"{where}.json_schema")
    _string(schema.get("name"), f"{where}.json_schema.name", empty=False)
    if schema.get("schema") is not None:
        _object(schema["schema"], f"{where}.json_schema.schema")
    if schema.get("strict") is not None:
        _boolean(schema["strict"], f"{where}.json_schema.strict")


_PARAMS: dict[str, Callable[[Any, str], None]] = {
    "temperature": _in(0, 2),
    "top_p": _in(0, 1),
    "max_tokens": _in(1, _INT32, integer=True),
    "max_completion_tokens": _in(1, _INT32, integer=True),
    "presence_penalty": _in(-2, 2),
    "frequency_penalty": _in(-2, 2),
    "seed": _in(-_INT64 - 1, _INT64, integer=True),
    "stop": _stop,
    "logit_bias": _logit_bias,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "response_format": _response_format,
    "user": _text,
    "reasoning_effort": lambda value, where: _choice(value, where, _REASONING_EFFORTS),
}


def check_params(params: Mapping[str, Any]) -> None:
    """Check the forwarded parameters (None values are left out before)."""
    for name, value in params.items():
        check = _PARAMS.get(name)
        if check is not None:
            check(value, name)
    if params.get("tool_choice") not in (None, "none") and not params.get("tools"):
        raise Invalid("'tool_choice' needs 'tools'", "tool_choice")


# Messages


def _part(value: Any, where: str, role: str) -> None:
    part = _object(value, where)
    kind = part.get("type")
    allowed = _PARTS[role]
    if kind not in allowed:
        shown = ", ".join(repr(a) for a in sorted(allowed))
        raise Invalid(f"'{where}.type' must be one of {shown} in a {role} message", where)
    if kind in ("text", "refusal"):
        _string(part.get(kind), f"{where}.{kind}")
    elif kind == "image_url":
        image = _object(part.get("image_url"), f"{where}.image_url")
        _string(image.get("url"), f"{where}.image_url.url", empty=False)
        if image.get("detail") is not None:
            _choice(image["detail"], f"{where}.image_url.detail", _IMAGE_DETAIL)
    elif kind == "input_audio":
        audio = _object(part.get("input_audio"), f"{where}.input_audio")
        _string(audio.get("data"), f"{where}.input_audio.data", empty=False)
        _string(audio.get("format"), f"{where}.input_audio.format", empty=False)
    else:
        _object(part.get("file"), f"{where}.file")


def _content(message: Message, where: str, role: str) -> None:
    content = message.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            _part(part, f"{where}.content[{index}]", role)
    elif content is None:
        calls = message.get("tool_calls") or message.get("function_call")
        if not (role == "assistant" and calls):
            raise Invalid(f"{where} has no content", f"{where}.content")
    elif not isinstance(content, str):
        message_text = f"{where}.content must be a string or an array, not {_kind(content)}"
        raise Invalid(message_text, f"{where}.content")


def _tool_calls(value: Any, where: str, ids: set[str]) -> None:
    if not isinstance(value, list) or not value:
        raise Invalid(f"'{where}' must be a non-empty array of tool calls", where)
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        call = _object(item, at)
        ids.add(_string(call.get("id"), f"{at}.id", empty=False))
        if call.get("type") is not None:
            _choice(call["type"], f"{at}.type", ("function",))
        function = _object(call.get("function"), f"{at}.function")
        _string(function.get("name"), f"{at}.function.name", empty=False)
        _string(function.get("arguments"), f"{at}.function.arguments")


def check_messages(messages: Any) -> list[Message]:
    """Check the conversation: each message an object of a known role with content of the
    kinds that role may send; tool calls well formed, on assistant messages only; each tool
    result answering a call made before it."""
    if not isinstance(messages, list) or not messages:
        raise Invalid("'messages' must be a non-empty array of message objects", "messages")
    ids: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise Invalid(f"{where} must be an object", where)
        role = message.get("role")
        if role not in _ROLES:
            raise Invalid(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
        _optional_string(message, "name", where)
        if message.get("tool_calls") is not None:
            if role != "assistant":
                raise Invalid(f"only assistant messages make tool calls, not {role}", where)
            _tool_calls(message["tool_calls"], f"{where}.tool_calls", ids)
        _content(message, where, role)
        if role == "assistant":
            _optional_string(message, "refusal", where)
        if role == "tool":
            call = _string(message.get("tool_call_id"), f"{where}.tool_call_id", empty=False)
            if call not in ids:
                raise Invalid(
                    f"{where} answers tool call {call[:64]!r}, which no earlier assistant "
                    "message made",
                    f"{where}.tool_call_id",
                )
        if role == "function":
            _string(message.get("name"), f"{where}.name", empty=False)
    return messages
