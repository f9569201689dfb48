"""The OpenAI wire format: reading chat requests, writing completions, chunks and errors.

Nothing here does I/O. A request body is checked field by field, so a client learns which field
was wrong (OpenAI's ``param``), and every refusal is an :class:`APIError` carrying the HTTP status
and the OpenAI error object it is sent as.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reflectkit.server.checks import MAX_MODEL_CHARS, Invalid, check_messages, check_params

__all__ = [
    "FORWARDED_PARAMS",
    "MAX_JSON_DEPTH",
    "APIError",
    "Answer",
    "ChatRequest",
    "ChunkWriter",
    "Delta",
    "ReflectOptions",
    "Usage",
    "completion_body",
    "error_body",
    "parse_chat_request",
]

Message = dict[str, Any]

FORWARDED_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "user",
        "reasoning_effort",
    }
)
"""Request fields passed on to the upstream model as they are."""

MAX_JSON_DEPTH = 64
"""How deep arrays and objects may nest in a request body (a tool's JSON schema needs a few
levels; OpenAI's structured outputs allow 10). Deeper is a 400: every layer that walks the body
(parsing, validation, copies, LiteLLM) recurses, and 1,000 levels fit in 2 KB."""

# Fields clients send that only make sense to OpenAI's own service; accepted and dropped.
_IGNORED_PARAMS = frozenset({"store", "metadata", "service_tier", "logprobs", "top_logprobs"})


class APIError(Exception):
    """A request the proxy refuses or could not serve, as an HTTP status and OpenAI error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ReflectOptions(_Options):
    """The ``reflectkit`` request field: how this request is reflected on."""

    mode: Literal["auto", "loop", "single"] | None = None
    max_iterations: int | None = Field(default=None, ge=1)
    critic_model: str | None = Field(default=None, min_length=1)
    on_critic_error: Literal["raise", "keep_best"] | None = None
    include_reasoning: bool = False


class StreamOptions(_Options):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """A checked ``POST /v1/chat/completions`` body; ``params`` are the forwarded fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    reflectkit: ReflectOptions | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def include_reasoning(self) -> bool:
        return self.reflectkit is not None and self.reflectkit.include_reasoning


def _invalid(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _where(error: ValidationError, prefix: str) -> tuple[str, str]:
    item = error.errors()[0]
    where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
    return where, f"{where}: {item['msg']}" if where else str(item["msg"])


def _too_deep() -> APIError:
    return _invalid(
        f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
        None,
        "invalid_json",
    )


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKETS = str.maketrans("{}", "[]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPES = re.compile(
    r"\\\\"  # an escaped backslash: the text after it is not an escape
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(\\u[dD][c-fC-F][0-9a-fA-F]{2})?"  # a high half (a pair?)
    r"|\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a low half alone
)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``text``, valid JSON. No
    recursion and no walk in Python: strings out, brackets kept, and each pass of C-speed
    ``replace`` takes away one level (the innermost pairs)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    shape = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_BRACKETS)
    for _ in range(limit):
        if not shape:
            return False
        shape = shape.replace("[]", "")
    return bool(shape)


def _repair_escapes(text: str) -> str:
    """JSON text whose lone surrogate escapes (``\\ud83d`` without its pair) are ``\\ufffd``:
    what it decodes to is valid Unicode. Pairs stay, and so does the text of an escaped
    backslash (``\\\\ud83d`` is a backslash and the letters ``ud83d``)."""

    def fix(match: re.Match[str]) -> str:
        whole = match.group()
        return whole if whole == "\\\\" or match.group(1) is not None else "\\ufffd"

    return _ESCAPES.sub(fix, text)


class _NotFinite(ValueError):
    pass


def _not_a_number(name: str) -> Any:
    """Python's parser reads NaN and Infinity, which are not JSON: every number must be finite."""
    raise _NotFinite(f"the request body has {name}, which is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NotFinite(f"the request body has the number {text[:40]}, too large to be finite")
    return value


def _load_json(raw: bytes) -> Any:
    """The body's JSON value: UTF-8 (RFC 8259), nested at most :data:`MAX_JSON_DEPTH` levels,
    any lone surrogate escape read as U+FFFD; else a 400."""
    try:
        text = raw.decode("utf-8-sig")
        if _SURROGATE_ESCAPE.search(text):
            # Half an emoji, as JSON can spell it, goes on as U+FFFD, which any wire carries.
            text = _repair_escapes(text)
        body = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except _NotFinite as error:
        raise _invalid(str(error), None, "invalid_json") from None
    except ValueError:  # UnicodeDecodeError too
        raise _invalid("the request body is not valid JSON", None, "invalid_json") from None
    except RecursionError:  # deeper than Python's parser goes: far past MAX_JSON_DEPTH
        raise _too_deep() from None
    if _deeper_than(text, MAX_JSON_DEPTH):
        raise _too_deep()
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Read and check a chat completion request body; raises :class:`APIError` (400)."""
    body = _load_json(raw)
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    unknown = sorted(
        set(body) - FORWARDED_PARAMS - _IGNORED_PARAMS - set(ChatRequest.model_fields)
        | ({"params"} & set(body))
    )
    if unknown:
        raise _invalid(f"unrecognized request argument: {unknown[0]}", unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("'model' must be a non-empty string", "model")
    if len(model) > MAX_MODEL_CHARS:
        raise _invalid(f"'model' is longer than {MAX_MODEL_CHARS} characters", "model")
    if body.get("n", 1) != 1:
        raise _invalid("only n=1 is supported", "n")
    params = {k: v for k, v in body.items() if k in FORWARDED_PARAMS and v is not None}
    try:
        messages = check_messages(body.get("messages"))
        check_params(params)
    except Invalid as error:
        raise _invalid(error.message, error.param) from None
    fields = {k: body[k] for k in ("stream", "stream_options", "reflectkit") if body.get(k)}
    for name in ("reflectkit", "stream_options"):
        if name in fields and not isinstance(fields[name], dict):
            raise _invalid(f"'{name}' must be an object", name)
    if "stream" in fields and not isinstance(fields["stream"], bool):
        raise _invalid("'stream' must be a boolean", "stream")
    try:
        return ChatRequest(model=model.strip(), messages=messages, params=params, **fields)
    except ValidationError as error:
        param, message = _where(error, "")
        raise _invalid(message, param) from None


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def body(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class Delta:
    """A piece of a streamed reply: answer text, reasoning text, or tool-call pieces."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] | None = None

    def body(self) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if self.content:
            delta["content"] = self.content
        if self.reasoning:
            delta["reasoning_content"] = self.reasoning
        if self.tool_calls:
            delta["tool_calls"] = self.tool_calls
        return delta


@dataclass
class Answer:
    """A whole reply, whichever way it was made; a stream ends with one whose ``content`` is
    None (the deltas carried it)."""

    content: str | None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] | None = None


def completion_body(model: str, answer: Answer) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    body: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": answer.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": answer.usage.body(),
    }
    if answer.extra is not None:
        body["reflectkit"] = answer.extra
    return body


class ChunkWriter:
    """Writes the ``chat.completion.chunk`` events of one streamed reply as SSE lines."""

    def __init__(self, model: str) -> None:
        self.id = new_id()
        self.created = int(time.time())
        self.model = model

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def finish(self, answer: Answer) -> bytes:
        """The last chunk with choices: the finish reason (and reflectkit's run summary)."""
        extra = {"reflectkit": answer.extra} if answer.extra is not None else {}
        choice = {"index": 0, "delta": {}, "finish_reason": answer.finish_reason}
        return self._event([choice], **extra)

    def usage(self, usage: Usage) -> bytes:
        return self._event([], usage=usage.body())

    @staticmethod
    def error(error: APIError) -> bytes:
        return b"data: " + json.dumps(error.body()).encode() + b"\n\n"

    DONE = b"data: [DONE]\n\n"
