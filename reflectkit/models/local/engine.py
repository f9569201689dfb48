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

A ``grammar`` parameter (GBNF text) constrains sampling to the strings the grammar accepts. Each
distinct grammar is checked once per worker by building llama.cpp's grammar sampler from it, with
the parser's complaint (which llama.cpp prints to stderr) captured: a grammar that does not parse
is a ProviderFailure(400) with that reason, remembered so that it is not parsed again. A grammar
that parses but can reach a state no token satisfies (``root ::= [^\\x00-\\U0010FFFF]``) makes
llama.cpp abort while sampling; the worker process turns that into a LocalModelCrashError.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reflectkit.errors import LocalModelError
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


_GRAMMARS_KEPT = 64
_grammars: OrderedDict[tuple[Path, str], Any] = OrderedDict()  # a LlamaGrammar or the error


def _captured_stderr(call: Any) -> tuple[Any, str]:
    """``call()`` and what native code wrote to file descriptor 2 meanwhile."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return result, sink.read().decode("utf-8", "replace")


def _grammar_reason(printed: str, text: str) -> str:
    """Why llama.cpp refused ``text``, from what it printed (the parser says little else)."""
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    found = next((line for line in lines if "error parsing grammar" in line), None)
    if found:
        return found.split("error parsing grammar: ", 1)[-1]
    if not re.search(r"(?m)^\s*root\s*::=", text):
        return "it has no rule named root, where matching starts"
    return next(iter(lines), "llama.cpp could not parse it")


def _grammar(llama_cpp: Any, engine: _Engine, path: Path, text: str) -> Any:
    """The LlamaGrammar for ``text``, checked once per worker; ProviderFailure(400) if bad.

    llama-cpp-python builds the grammar sampler from the text on every call (a fraction of a
    millisecond for reflectkit's grammars); what is kept here is the check's verdict. Call with
    the engine's lock held.
    """
    key = (path, text)
    known = _grammars.get(key)
    if known is None:
        sampler, printed = _captured_stderr(  # the root rule is "root", as LlamaGrammar's
            lambda: llama_cpp.llama_sampler_init_grammar(engine.vocab, text.encode(), b"root")
        )
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
            known = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
        else:
            known = f"invalid grammar: {_grammar_reason(printed, text)}"
        _grammars[key] = known
        while len(_grammars) > _GRAMMARS_KEPT:
            _grammars.popitem(last=False)
    _grammars.move_to_end(key)
    if isinstance(known, str):
        raise ProviderFailure(400, known)
    return known


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


class _LazyGrammar:
    """A GBNF grammar applied as llama.cpp's own tools apply it, for greedy decoding: the
    model's first choice is checked against the grammar alone and kept when it fits (nearly
    every token: free text inside the tags); only when it does not is the grammar applied to
    the whole vocabulary. llama-cpp-python's sampler chain applies it to all ~49k tokens at
    every step, which cost ~16 ms a token on SmolLM2 (~25 ms): the same tokens, ~1.6x slower.

    Used as a llama-cpp-python logits processor: each call first feeds the grammar the tokens
    sampled since the last call, then masks the scores only if their best token is refused.
    """

    def __init__(self, llama_cpp: Any, vocab: Any, text: str, prompt_length: int) -> None:
        import numpy as np  # llama-cpp-python's own dependency: present wherever it is

        self._np = np
        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not self._sampler:
            raise ProviderFailure(400, "invalid grammar")  # checked before: not expected
        self._seen = prompt_length
        self.dead_end = False
        """Set when the grammar allows no token at all: the call must fail, not go on."""
        self._one = (llama_cpp.llama_token_data * 1)()
        self._single = llama_cpp.llama_token_data_array(
            data=self._one, size=1, selected=-1, sorted=False
        )

    def _allows(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._single.size, self._single.selected = 1, -1
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(self._single))
        return bool(self._one[0].logit != float("-inf"))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.dead_end:
            return scores
        for token in input_ids[self._seen :]:
            self._lib.llama_sampler_accept(self._sampler, int(token))
        self._seen = len(input_ids)
        if self._allows(int(self._np.argmax(scores))):
            return scores
        np, lib = self._np, self._lib
        every = np.zeros(
            len(scores), dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
        )
        every["id"] = np.arange(len(scores), dtype=np.intc)
        every["logit"] = scores
        array = lib.llama_token_data_array(
            data=every.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)),
            size=len(scores),
            selected=-1,
            sorted=False,
        )
        lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        if not np.isfinite(every["logit"]).any():
            # No token fits: the sampled one must not reach the grammar, where llama.cpp aborts.
            # An exception cannot cross the sampler's C callback: the generation loop asks.
            self.dead_end = True
            return scores
        return every["logit"].copy()

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


def _greedy(settings: Settings) -> bool:
    """Whether the call decodes greedily with nothing that reshapes the scores after the
    grammar (penalties), so checking the first choice picks what the full grammar would."""
    neutral = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
    return settings.sampling.get("temp", 0.0) == 0.0 and all(
        settings.sampling.get(name, value) == value for name, value in neutral.items()
    )


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
) -> tuple[dict[str, Any], _LazyGrammar | None]:
    """Llama.generate's keyword arguments for ``settings``, and the lazy grammar among them (to
    close after the call) when a greedy call has one. Call with the engine's lock held."""
    sampling = dict(settings.sampling)
    if not settings.grammar:
        return sampling, None
    checked = _grammar(llama_cpp, engine, path, settings.grammar)
    if not _greedy(settings):
        sampling["grammar"] = checked
        return sampling, None
    lazy = _LazyGrammar(llama_cpp, engine.vocab, settings.grammar, prompt_length)
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
