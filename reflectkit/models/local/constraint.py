"""A call's grammar in the worker: checked once, then applied lazily when decoding is greedy.

A ``grammar`` parameter (GBNF text) constrains sampling to the strings the grammar accepts. Each
distinct grammar is checked once per worker by building llama.cpp's grammar sampler from it, with
the parser's complaint (which llama.cpp prints to stderr) captured: a grammar that does not parse
is a ProviderFailure(400) with that reason, remembered so that it is not parsed again. A grammar
that parses but can reach a state no token satisfies (``root ::= [^\\x00-\\U0010FFFF]``) makes
llama.cpp abort while sampling; the worker process turns that into a LocalModelCrashError.

A greedy call does not need the grammar applied to the whole vocabulary at every step:
:class:`LazyGrammar` checks the model's first choice alone and masks the scores only when it does
not fit, which picks the same tokens ~1.6x faster. :mod:`reflectkit.models.local.engine` chooses
between the two ways for each call. Runs inside the worker process, like the engine: its imports
stay light (numpy is imported by the first lazy grammar; llama.cpp is passed in).
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reflectkit.models.provider import ProviderFailure

__all__ = ["LazyGrammar", "checked_grammar", "is_greedy"]

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


def checked_grammar(llama_cpp: Any, vocab: Any, path: Path, text: str) -> Any:
    """The LlamaGrammar for ``text``, checked once per worker; ProviderFailure(400) if bad.

    llama-cpp-python builds the grammar sampler from the text on every call (a fraction of a
    millisecond for reflectkit's grammars); what is kept here is the check's verdict. Call with
    the engine's lock held (``vocab`` is the loaded model's, ``path`` its file).
    """
    key = (path, text)
    known = _grammars.get(key)
    if known is None:
        sampler, printed = _captured_stderr(  # the root rule is "root", as LlamaGrammar's
            lambda: llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
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


def is_greedy(sampling: Mapping[str, Any]) -> bool:
    """Whether a call with these ``Llama.generate`` arguments decodes greedily with nothing that
    reshapes the scores after the grammar (penalties), so checking the first choice picks what
    the full grammar would."""
    neutral = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
    return sampling.get("temp", 0.0) == 0.0 and all(
        sampling.get(name, value) == value for name, value in neutral.items()
    )


class LazyGrammar:
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
        """Free llama.cpp's grammar sampler (once; later calls do nothing)."""
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None
