"""llama.cpp inference for the embedded local model; runs inside its worker process.

:mod:`reflectkit.models.local.worker` drives this module in a child process, so that a native crash
in llama.cpp (a segfault, an abort, an illegal instruction, an out-of-memory kill) ends that child,
never the caller. Nothing here talks to LiteLLM or to the caller: :func:`generate` takes a GGUF
path, the messages and the call's parameters, and yields text pieces as they are sampled, then a
last chunk with the finish reason and llama.cpp's own token counts.

Importing this module is cheap: ``llama_cpp`` is imported on the first load. The caller's side
uses :meth:`Settings.read` too, to refuse a bad parameter before anything is sent to the worker.

One ``llama_cpp.Llama`` is loaded per (file, ``n_ctx``) per worker; a lock serializes its use
(llama.cpp contexts are not thread-safe). llama.cpp's log goes to this module's logger at DEBUG
instead of stderr; its error lines are kept to explain a failed load.

A ``grammar`` parameter (GBNF text) constrains sampling to the strings the grammar accepts:
:mod:`reflectkit.models.local.constraint` checks each grammar once and, for a greedy call,
applies it lazily; a grammar that does not parse is a ProviderFailure(400) with llama.cpp's
reason.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reflectkit.content import message_text
from reflectkit.errors import LocalModelError
from reflectkit.models.local.constraint import LazyGrammar, checked_grammar, is_greedy
from reflectkit.models.provider import Message, ProviderChunk, ProviderFailure

__all__ = [
    "CPUS",
    "DECODE_THREADS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "INSTALL_HINT",
    "Settings",
    "build_info",
    "generate",
    "import_llama_cpp",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "reflectkit[local]"'
DEFAULT_MAX_TOKENS = 512
DEFAULT_N_CTX = 2048

_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# llama.cpp's decode threads spin-wait on each other: with one per core, any other busy process
# cuts generation 5-30x (measured on two cores). One core is left free; prompt evaluation, which
# degrades gently, uses them all.
DECODE_THREADS = max(1, CPUS - 1)
_SAMPLING = ("top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty")

Params = dict[str, Any]


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module; raises LocalModelError naming the install command."""
    try:
        import llama_cpp
    except (ImportError, OSError) as error:
        raise LocalModelError(
            f"the local model needs llama-cpp-python ({error}): {INSTALL_HINT}"
        ) from None
    return llama_cpp


def build_info() -> dict[str, str]:
    """What this llama.cpp was built with: its version and its system-info line (the CPU
    features compiled in, e.g. ``AVX2 = 1``, ``AMX_INT8 = 1``)."""
    llama_cpp = import_llama_cpp()
    raw = llama_cpp.llama_print_system_info()
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return {"version": str(getattr(llama_cpp, "__version__", "?")), "system_info": text.strip()}


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


def _engine(path: Path, n_ctx: int) -> _Engine:
    try:
        llama_cpp = import_llama_cpp()
    except LocalModelError as error:
        raise ProviderFailure(400, str(error)) from None
    key = (path, n_ctx)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _load(llama_cpp, path, n_ctx)
        return _engines[key]


def _load(llama_cpp: Any, path: Path, n_ctx: int) -> _Engine:
    _route_native_log(llama_cpp)
    _recent_errors.clear()
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=DECODE_THREADS,
            n_threads_batch=CPUS,
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


def preload(path: Path, n_ctx: int = DEFAULT_N_CTX, prefix: list[Message] | None = None) -> None:
    """Load ``path`` now, so the first call does not pay for it; with ``prefix`` (the messages
    the next calls will start with), also read them into llama.cpp's cache, so those calls read
    only what follows (see :func:`generate` on prefix reuse)."""
    engine = _engine(path, n_ctx)
    if not prefix:
        return
    llama_cpp, llama = import_llama_cpp(), engine.llama
    with engine.lock:
        tokens = _prompt(engine, prefix)
        if len(tokens) >= n_ctx:
            return  # a call with this prefix fails with its own, clearer, error
        llama.reset()
        llama_cpp.llama_set_n_threads(llama.ctx, DECODE_THREADS, CPUS)
        llama.eval(tokens)


def _prompt(engine: _Engine, messages: list[Message]) -> list[int]:
    """The prompt's tokens; a trailing assistant message is appended after the header."""
    # Text parts are joined with nothing between them, as the local model has always read them.
    turns = [
        {"role": str(m.get("role", "user")), "content": message_text(m.get("content"), sep="")}
        for m in messages
    ]
    prefill = turns.pop()["content"] if turns and turns[-1]["role"] == "assistant" else ""
    try:
        text = engine.formatter(messages=turns).prompt + prefill
    except Exception as error:  # a template may reject a conversation (raise_exception)
        raise ProviderFailure(400, f"the chat template rejected the messages: {error}") from None
    add_bos = engine.add_bos and not (engine.bos and text.startswith(engine.bos))
    # surrogatepass: a lone surrogate in a message must not kill the call (it tokenizes as bytes)
    tokens: list[int] = engine.llama.tokenize(
        text.encode("utf-8", "surrogatepass"), add_bos=add_bos, special=True
    )
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
class Settings:
    """What a call asks of the model, read from its parameters (see
    :mod:`reflectkit.models.local`)."""

    n_ctx: int
    max_tokens: int
    stops: list[str]
    seed: int | None
    sampling: dict[str, Any]  # keyword arguments of Llama.generate
    threads: tuple[int, int]  # decode, prompt evaluation
    cache_prompt: bool
    grammar: str | None = None  # GBNF text; None or "": unconstrained

    @classmethod
    def read(cls, params: Params) -> Settings:
        """The settings ``params`` ask for; raises ProviderFailure(400) for a bad value."""
        try:
            n_ctx = int(params.get("n_ctx") or DEFAULT_N_CTX)
            max_tokens = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
            threads = int(params.get("n_threads") or 0)
            seed = None if params.get("seed") is None else int(params["seed"])
            sampling = {"temp": float(params.get("temperature") or 0.0)}
            sampling |= {k: float(params[k]) for k in _SAMPLING if params.get(k) is not None}
            if "top_k" in sampling:
                sampling["top_k"] = int(sampling["top_k"])
        except (TypeError, ValueError, OverflowError) as error:
            raise ProviderFailure(400, f"invalid parameter for the local model: {error}") from None
        if n_ctx < 16 or max_tokens < 1 or threads < 0:
            raise ProviderFailure(
                400, "n_ctx must be at least 16, max_tokens at least 1, n_threads not negative"
            )
        stop = params.get("stop") or []
        grammar = params.get("grammar") or None
        if grammar is not None and not isinstance(grammar, str):
            raise ProviderFailure(400, "grammar must be a string of GBNF rules")
        return cls(
            n_ctx=n_ctx,
            max_tokens=max_tokens,
            stops=[stop] if isinstance(stop, str) else [str(s) for s in stop],
            seed=seed,
            sampling=sampling,
            threads=(threads, threads) if threads else (DECODE_THREADS, CPUS),
            cache_prompt=params.get("cache_prompt") is None or bool(params["cache_prompt"]),
            grammar=grammar,
        )


def _extends_cache(llama: Any, prompt: list[int]) -> bool:
    """Whether everything in llama.cpp's cache is a proper prefix of ``prompt``, so the call
    can read only the rest and leave the cache as one unbroken run of cells.

    Only then is the reply the one a whole read gives, to the bit: on CPU a token's keys and
    values do not depend on how the prompt was split into batches, or on being generated, but
    attention does depend on where the cells sit. llama-cpp-python's own reuse cuts the cache
    back to the longest common prefix, which leaves later tokens in other cells, and that
    changed replies (tests/test_local.py keeps one such case).
    """
    cached = int(llama.n_tokens)
    if not 0 < cached < len(prompt):
        return False
    return [int(t) for t in llama._input_ids[:cached]] == prompt[:cached]


def _room(settings: Settings, prompt_length: int) -> int:
    """The tokens the context leaves for the reply; ContextWindowError's 400 when none."""
    room = settings.n_ctx - prompt_length
    if room <= 0:
        raise ProviderFailure(
            400,
            f"the prompt ({prompt_length} tokens) exceeds the available context size "
            f"(n_ctx={settings.n_ctx}); pass a larger n_ctx",
            context_window=True,
        )
    return room


def _sampling(
    llama_cpp: Any, engine: _Engine, path: Path, settings: Settings, prompt_length: int
) -> tuple[dict[str, Any], LazyGrammar | None]:
    """Llama.generate's keyword arguments for ``settings``, and the lazy grammar among them (to
    close after the call) when a greedy call has one. Call with the engine's lock held."""
    sampling = dict(settings.sampling)
    if not settings.grammar:
        return sampling, None
    checked = checked_grammar(llama_cpp, engine.vocab, path, settings.grammar)
    if not is_greedy(settings.sampling):
        sampling["grammar"] = checked
        return sampling, None
    lazy = LazyGrammar(llama_cpp, engine.vocab, settings.grammar, prompt_length)
    sampling["logits_processor"] = llama_cpp.LogitsProcessorList([lazy])
    return sampling, lazy


def generate(
    path: Path, messages: list[Message], params: Params, cancel: threading.Event
) -> Iterator[ProviderChunk]:
    """The one generation path: text pieces as sampled, then a chunk with finish and usage.

    Setting ``cancel`` ends generation at the next token, freeing the model.
    """
    settings = Settings.read(params)
    engine = _engine(path, settings.n_ctx)
    llama_cpp, llama = import_llama_cpp(), engine.llama
    with engine.lock:
        if cancel.is_set():
            return
        prompt = _prompt(engine, messages)
        room = _room(settings, len(prompt))
        sampling, lazy = _sampling(llama_cpp, engine, path, settings, len(prompt))
        if not (settings.cache_prompt and _extends_cache(llama, prompt)):
            llama.reset()  # read the whole prompt into an empty cache
        llama_cpp.llama_set_n_threads(llama.ctx, *settings.threads)
        llama.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed)
        text = _Detokenizer(settings.stops)
        completion: list[int] = []
        finish, stopped = "length", False
        try:
            for token in llama.generate(prompt, **sampling):
                if cancel.is_set():
                    return
                if lazy is not None and lazy.dead_end:
                    written = llama.detokenize(completion).decode("utf-8", "replace")
                    raise ProviderFailure(
                        400,
                        f"the grammar allows no token after {written[-60:]!r}: "
                        "no text can satisfy it there",
                    )
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
        finally:
            if lazy is not None:
                lazy.close()
        tail = "" if stopped else text.flush()
        if tail:
            yield ProviderChunk(tail)
        yield ProviderChunk("", finish, len(prompt), len(completion))
