"""The stream parser: the one state machine that splits a reply into its blocks.

:class:`StreamParser` reads a reply chunk by chunk and emits each channel's text, as a
:class:`TagDelta` of the channel's kind, as soon as it is certain; :func:`~reflectkit.tags.parse`
feeds it a whole text at once, so the two always agree.
Its rules (nesting, several output blocks, the provisional answer) are described in
:mod:`reflectkit.tags`, its public home. Tags are found by :mod:`reflectkit._tag_lexer` and told
from mentions by :mod:`reflectkit._tag_mentions`; :class:`_Block` keeps one block's text and
:class:`_Events` collects the deltas of one feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from reflectkit._tag_lexer import REFLECTION_TAGS, TagScheme, _Channel, _Match, _TagMatcher
from reflectkit._tag_mentions import _LOOKBEHIND, _MORE, LOOKAHEAD, _Mentions
from reflectkit._tag_results import Parsed, ParseStatus

__all__ = [
    "PROVISIONAL_AFTER",
    "OutputDelta",
    "OutputReset",
    "OutsideDelta",
    "ReflectionDelta",
    "StreamParser",
    "TagDelta",
    "ThinkingDelta",
]

PROVISIONAL_AFTER = 200
"""Characters of outside text after which a stream, still without an output block, starts
emitting that text as the (provisional) answer; shorter outside text comes at the end."""


@dataclass(frozen=True)
class TagDelta:
    """A piece of one channel's text, emitted by :class:`StreamParser` as soon as it is sure.

    ``index`` is the block the text belongs to: ``Parsed.thinking[index]`` for thinking,
    ``Parsed.reflections[index]`` for reflections, always 0 for output and outside text.
    """

    text: str
    """The new text."""
    index: int = 0
    """Which block of its kind it belongs to, 0-based."""


@dataclass(frozen=True)
class ThinkingDelta(TagDelta):
    """Text of a thinking block."""


@dataclass(frozen=True)
class ReflectionDelta(TagDelta):
    """Text of a reflection block."""


@dataclass(frozen=True)
class OutputDelta(TagDelta):
    """Text of the answer.

    The texts of the output deltas after the last :class:`OutputReset` join to the answer,
    ``result.output``. ``provisional`` marks outside text streamed as the answer because no
    output block has come: it is the answer only if none comes (see :data:`PROVISIONAL_AFTER`).
    """

    provisional: bool = False
    """Text outside the tags, streamed as the answer until an output block replaces it."""


@dataclass(frozen=True)
class OutputReset(OutputDelta):
    """The answer streamed so far is withdrawn; the output deltas after this one are the answer.

    Sent when an output block replaces provisional outside text, and when the model reconsidered
    (a thinking or reflection block) and wrote a new output block. ``withdrawn`` is the text taken
    back. ``text`` is a blank line: what a consumer that cannot take text back (a chat client, a
    terminal) appends, so the new answer starts a paragraph of its own; a consumer that can
    (a live view) clears its answer instead.
    """

    text: str = "\n\n"
    withdrawn: str = ""


@dataclass(frozen=True)
class OutsideDelta(TagDelta):
    """Text outside every block (the answer only if no output block ever comes)."""


class _Block:
    """One channel's text as it streams: strips both ends, joins segments with a separator."""

    def __init__(self, separator: str) -> None:
        self.parts: list[str] = []
        self._separator = separator
        self.started = False
        self._separate = False
        self._pending: list[str] = []  # whitespace that waits for more text (list: linear time)

    def new_segment(self) -> None:
        self._pending = []
        self._separate = self.started

    def add(self, text: str) -> str:
        """Take text, return what can be emitted now (trailing whitespace waits)."""
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
        body = text.rstrip()
        if not body:
            self._pending.append(text)
            return ""
        emit = "".join(self._pending) + body if self._pending else body
        if self._separate:
            emit = self._separator + emit.lstrip()
            self._separate = False
        tail = text[len(body) :]
        self._pending = [tail] if tail else []
        self.started = True
        self.parts.append(emit)
        return emit

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""


class _Events:
    """The deltas of one feed; runs of text of one kind are joined once, at the end."""

    def __init__(self) -> None:
        self._runs: list[tuple[type[TagDelta], int, bool, list[str]] | TagDelta] = []

    def text(self, kind: type[TagDelta], index: int, text: str, provisional: bool = False) -> None:
        last = self._runs[-1] if self._runs else None
        if isinstance(last, tuple) and last[:3] == (kind, index, provisional):
            last[3].append(text)
        else:
            self._runs.append((kind, index, provisional, [text]))

    def add(self, delta: TagDelta) -> None:
        self._runs.append(delta)

    def done(self) -> list[TagDelta]:
        deltas: list[TagDelta] = []
        for run in self._runs:
            if not isinstance(run, tuple):
                deltas.append(run)
            elif run[0] is OutputDelta:
                deltas.append(OutputDelta("".join(run[3]), run[1], run[2]))
            else:
                deltas.append(run[0]("".join(run[3]), run[1]))
        return deltas


_DELTA_TYPES: dict[_Channel, type[TagDelta]] = {
    _Channel.THINKING: ThinkingDelta,
    _Channel.REFLECTION: ReflectionDelta,
    _Channel.OUTPUT: OutputDelta,
    _Channel.OUTSIDE: OutsideDelta,
}


class StreamParser:
    """Parse a reply chunk by chunk, emitting typed deltas as soon as they are certain.

    Held back: text that may still turn out to be the start of a tag (``<out`` before ``put>``),
    the text after a tag while it may still make the tag a mention (at most :data:`LOOKAHEAD`
    characters, usually none), and whitespace at the end of a block. :meth:`close` flushes what
    was held and makes :attr:`result` final; it equals :func:`parse` on the whole text, however
    it was split.

    The answer streams as :class:`OutputDelta`: the output block's text as it is written; and,
    while no output block has come, the outside text, marked ``provisional`` (from the first
    :data:`PROVISIONAL_AFTER` characters on, or at :meth:`close` when shorter). When an output
    block replaces text already streamed as the answer, an :class:`OutputReset` comes first. So
    the output deltas after the last reset always join to ``result.output``, and the outside
    deltas to ``result.outside``.
    """

    def __init__(self, scheme: TagScheme = REFLECTION_TAGS) -> None:
        self.scheme = scheme
        names = {scheme.thinking: _Channel.THINKING}
        if scheme.reflection is not None:
            names[scheme.reflection] = _Channel.REFLECTION
        if scheme.output is not None:
            names[scheme.output] = _Channel.OUTPUT
        self._matcher = _TagMatcher(names)
        self._mentions = _Mentions(self._matcher)
        self._buffer = ""
        self._behind = "\n"  # raw text before the buffer, for mentions; "\n": the text's start
        self._stack: list[_Channel] = []
        self._thinking: list[_Block] = []
        self._reflections: list[_Block] = []
        self._outputs: list[_Block] = []
        self._answer_start = 0  # the first output block of the current answer
        self._candidate: int | None = None  # a new answer's first block, until it has text
        self._reconsidered = False  # thinking or reflection opened since the last output block
        self._answer_has_text = False
        self._outside = _Block("\n")
        self._outside_is_answer = scheme.output is None
        self._outside_chars = 0
        self._provisional_live = False  # outside text is streaming as the provisional answer
        self._saw_tag = False
        self._saw_output = False
        self._closed = False
        self._open_at_end = False
        self._events = _Events()

    def feed(self, chunk: str) -> list[TagDelta]:
        """Add a chunk of the reply; return the deltas it made certain."""
        if self._closed:
            raise RuntimeError("StreamParser.feed() called after close()")
        self._buffer += chunk
        return self._scan(final=False)

    def close(self) -> list[TagDelta]:
        """End the reply: flush held-back text and fix :attr:`result`."""
        if self._closed:
            return []
        self._scan(final=True, flush=False)
        if not self._outside_is_answer and not self._saw_output and not self._provisional_live:
            text = self._outside.text
            if text:
                self._events.text(OutputDelta, 0, text, provisional=True)
        self._open_at_end = bool(self._stack)
        self._closed = True
        return self._flush()

    @property
    def open_tags(self) -> list[str]:
        """Names of the blocks still open, outermost first (e.g. to close them in a prompt)."""
        names = {
            _Channel.THINKING: self.scheme.thinking,
            _Channel.REFLECTION: self.scheme.reflection,
            _Channel.OUTPUT: self.scheme.output,
        }
        return [name for channel in self._stack if (name := names.get(channel))]

    @property
    def result(self) -> Parsed:
        """The reply parsed so far; final once :meth:`close` has been called."""
        outside = self._outside.text
        outputs = [b.text for b in self._outputs]
        if self._outside_is_answer:
            output, outside = outside, ""
        elif self._saw_output:
            output = "\n\n".join(t for t in outputs[self._answer_start :] if t)
        else:
            output = outside
        thinking = [b.text for b in self._thinking]
        reflections = [b.text for b in self._reflections]
        if not self._saw_tag:
            status = ParseStatus.UNTAGGED if output else ParseStatus.EMPTY
        elif not self._outside_is_answer and not self._saw_output:
            status = ParseStatus.MISSING_OUTPUT
        elif self._open_at_end or (not self._closed and self._stack):
            status = ParseStatus.UNCLOSED
        else:
            status = ParseStatus.COMPLETE
        return Parsed(output, thinking, reflections, outside, status, outputs, self._answer_start)

    def _flush(self) -> list[TagDelta]:
        events, self._events = self._events, _Events()
        return events.done()

    def _scan(self, final: bool, flush: bool = True) -> list[TagDelta]:
        s = self._buffer
        n = len(s)
        i = p = 0  # text from i is not handled yet; the next "<" is searched from p
        while (j := self._matcher.find(s, p)) >= 0:
            kind, end, closing, channel = self._matcher.match(s, j)
            if kind is _Match.PARTIAL and not final:
                break
            if kind is not _Match.TAG or channel is None:
                p = j + 1
                continue
            limit = end + LOOKAHEAD
            behind = (self._behind + s[max(0, j - _LOOKBEHIND) : j])[-_LOOKBEHIND:]
            mention = self._mentions.check(behind, s[end:limit], final or n >= limit)
            if mention == _MORE:
                break
            if mention is not None:
                p = end + mention  # named, not used: part of the text
                continue
            if j > i:
                self._text(s[i:j])
            self._tag(channel, closing)
            i = p = end
        else:
            j = n
        if j > i:
            self._text(s[i:j])
        self._behind = (self._behind + s[max(0, j - _LOOKBEHIND) : j])[-_LOOKBEHIND:]
        self._buffer = s[j:]
        return self._flush() if flush else []

    def _text(self, text: str) -> None:
        channel = self._stack[-1] if self._stack else _Channel.OUTSIDE
        if channel is _Channel.OUTPUT:
            self._output_text(text)
            return
        if channel is _Channel.THINKING:
            block, index = self._thinking[-1], len(self._thinking) - 1
        elif channel is _Channel.REFLECTION:
            block, index = self._reflections[-1], len(self._reflections) - 1
        else:
            block, index = self._outside, 0
        emitted = block.add(text)
        if not emitted:
            return
        if channel is not _Channel.OUTSIDE:
            self._events.text(_DELTA_TYPES[channel], index, emitted)
        elif self._outside_is_answer:
            self._events.text(OutputDelta, 0, emitted)
        else:
            self._events.text(OutsideDelta, 0, emitted)
            if not self._saw_output:
                self._provisional(emitted)

    def _provisional(self, emitted: str) -> None:
        """Outside text while no output block has come: the answer if none comes."""
        if self._provisional_live:
            self._events.text(OutputDelta, 0, emitted, provisional=True)
            return
        self._outside_chars += len(emitted)
        if self._outside_chars >= PROVISIONAL_AFTER:
            self._provisional_live = True
            self._events.text(OutputDelta, 0, self._outside.text, provisional=True)

    def _output_text(self, text: str) -> None:
        block = self._outputs[-1]
        first = not block.started
        emitted = block.add(text)
        if not emitted:
            return
        if first:
            if self._candidate is not None:  # a new answer has text: it replaces the last
                withdrawn = self._answer(self._answer_start, self._candidate)
                self._answer_start, self._candidate = self._candidate, None
                self._answer_has_text = False
                if withdrawn:
                    self._events.add(OutputReset(withdrawn=withdrawn))
            if self._answer_has_text:
                emitted = "\n\n" + emitted
            self._answer_has_text = True
        self._events.text(OutputDelta, 0, emitted)

    def _answer(self, start: int, stop: int) -> str:
        return "\n\n".join(t for b in self._outputs[start:stop] if (t := b.text))

    def _tag(self, channel: _Channel, closing: bool) -> None:
        self._saw_tag = True
        if closing:
            if channel in self._stack:
                while self._stack.pop() is not channel:
                    pass
                if not self._stack:
                    self._outside.new_segment()
            return
        nest = channel is _Channel.REFLECTION and self._stack[-1:] == [_Channel.THINKING]
        if not nest:
            self._stack.clear()
        if channel is _Channel.REFLECTION and self._stack[-1:] == [_Channel.REFLECTION]:
            self._stack.pop()
        self._stack.append(channel)
        if channel is _Channel.THINKING:
            self._thinking.append(_Block(""))
        elif channel is _Channel.REFLECTION:
            self._reflections.append(_Block(""))
        if channel is not _Channel.OUTPUT:
            self._reconsidered = bool(self._outputs)
            return
        if not self._saw_output and self._provisional_live:
            self._events.add(OutputReset(withdrawn=self._outside.text))
        self._saw_output = True
        if self._reconsidered:
            self._candidate = len(self._outputs)
            self._reconsidered = False
        self._outputs.append(_Block(""))
