"""The tag protocol: tag schemes, a tolerant parser, a stream parser and tag escaping.

A model that follows the protocol reasons inside ``<thinking>``, corrects itself inside
``<reflection>`` and answers inside ``<output>`` (the names are a :class:`TagScheme`'s to choose).
Models follow it loosely, so the parser is built to never raise on model text and to say, through
:class:`ParseStatus`, how far the reply kept to the format.

One state machine does all the work: :func:`parse` feeds the whole text to a
:class:`StreamParser` at once, so a streamed reply and the same reply parsed whole always agree
(a property test holds them to it for any chunking). It runs in time linear in the text: every
character is looked at a bounded number of times.

The grammar of a tag is ``<`` + up to three spaces + optional ``/`` + up to three spaces + a
scheme name in any letter case + up to three spaces + ``>``. Nesting is resolved like this:

* opening ``thinking`` or ``output`` closes whatever is open (models often forget closing tags);
* opening ``reflection`` inside ``thinking`` nests; anywhere else it closes what is open;
* a closing tag closes its block and anything opened inside it; a closing tag whose block is not
  open is ignored;
* text outside every block is kept as ``outside``; when the scheme has no output tag (as
  :data:`THINK_TAGS`), that text is the answer.

**Tags named in prose are text.** Models write about the format ("I'll give my final answer in
the <output> tags", "then close with </thinking>"). A tag is a *mention*, and stays text, when

* a noun for it follows: ``<output> tags``, ``the <reflection> block``, ``<thinking> and
  <output> sections`` (``tag``, ``block``, ``section``, ``element``, ``marker`` ... in lower case,
  after a space; tags joined by ``and``, ``or``, ``,``, ``/``, ``...`` count as one mention);
* it is quoted: an opening quote or backtick right before it and the closing one later on the
  same line (```<output>``, ``"<output>4</output>"``);
* it is used as a word in a sentence: a determiner, preposition or verb of the kind "the", "in",
  "with", "use" right before it (and a space), and the sentence going on right after it (a space
  and a lower-case word, or ``, ; : . ! ? )``): ``in <output>, after``, ``close with
  </thinking>.``

Everything else is a tag: ``<output>`` at the start of a line, or followed by its content
(``is <output>4``, ``a <reflection>wait``), always opens the block. Deciding may need up to
:data:`LOOKAHEAD` characters after the tag (usually one), which the stream parser holds back.

**Several output blocks.** A thinking or reflection block written after an output block means the
model reconsidered: the next output block starts a new answer, which replaces the earlier one as
soon as it has any text (an empty one replaces nothing). Output blocks with no reasoning between
them are parts of one answer, joined by a blank line. :attr:`Parsed.outputs` keeps every block,
:attr:`Parsed.superseded` says how many of them were replaced.

Each block's text is stripped at both ends; several runs of outside text are joined by a newline.
The answer of a reply with no output block is its outside text; :attr:`Parsed.status` says which
case applied.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from reflectkit.errors import ConfigurationError

__all__ = [
    "LOOKAHEAD",
    "PARSE_IN_THREAD_CHARS",
    "PROVISIONAL_AFTER",
    "REFLECTION_TAGS",
    "THINK_TAGS",
    "OutputDelta",
    "OutputReset",
    "OutsideDelta",
    "ParseStatus",
    "Parsed",
    "ReflectionDelta",
    "StreamParser",
    "TagDelta",
    "TagScheme",
    "ThinkingDelta",
    "aparse",
    "escape_tags",
    "parse",
]

_MAX_SPACES = 3
_MAX_NAME = 32
_FORBIDDEN_IN_NAME = re.compile(r"[\s<>/&]")
# A tag's parts: spaces, "/", spaces, name, spaces, ">". One more space or name character than
# allowed is enough to say "not a tag", so each part stops there (bounded work per "<").
_SHAPE = re.compile(r"<(\s{0,4})(/?)(\s{0,4})([^\s<>/]{0,33})(\s{0,4})(>?)")

LOOKAHEAD = 200
"""The most characters after a tag the parser reads to tell a mention from a use."""

PROVISIONAL_AFTER = 200
"""Characters of outside text after which a stream, still without an output block, starts
emitting that text as the (provisional) answer; shorter outside text comes at the end."""

PARSE_IN_THREAD_CHARS = 256 * 1024
"""Replies longer than this are parsed in a worker thread by :func:`aparse` (and by the loop's
nodes), so a long parse never holds up the event loop; shorter ones are parsed inline."""


@dataclass(frozen=True)
class TagScheme:
    """The tag names of one protocol: reasoning, self-correction and answer.

    Names may be in any script (``TagScheme("推理", "反思", "输出")``). ``reflection`` and
    ``output`` may be ``None``: a scheme without an output tag (like :data:`THINK_TAGS`) takes
    the text outside its tags as the answer.
    """

    thinking: str = "thinking"
    reflection: str | None = "reflection"
    output: str | None = "output"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name in self.names:
            if not name or len(name) > _MAX_NAME or _FORBIDDEN_IN_NAME.search(name):
                raise ConfigurationError(
                    f"invalid tag name {name!r}: use 1-{_MAX_NAME} characters without "
                    "spaces, '<', '>', '/' or '&'"
                )
            if name.casefold() in seen:
                raise ConfigurationError(f"tag name {name!r} is used twice in one scheme")
            seen.add(name.casefold())

    @property
    def names(self) -> tuple[str, ...]:
        """The scheme's tag names, without the ones it does not use."""
        return tuple(n for n in (self.thinking, self.reflection, self.output) if n is not None)


REFLECTION_TAGS = TagScheme("thinking", "reflection", "output")
"""``<thinking>``, ``<reflection>``, ``<output>``: the scheme Reflection-70B was tuned on."""

THINK_TAGS = TagScheme("think", None, None)
"""``<think>`` as DeepSeek-R1 and Qwen reasoning models emit it; the rest of the text answers."""


class ParseStatus(StrEnum):
    """How far a reply kept to the tag format."""

    COMPLETE = "complete"
    """Every block was closed and the answer came from an output block (or, for a scheme
    without an output tag, from the text outside the tags)."""
    UNCLOSED = "unclosed"
    """A block was still open when the text ended; its text runs to the end."""
    MISSING_OUTPUT = "missing_output"
    """Tags were used but there was no output block; the answer is the text outside the tags."""
    UNTAGGED = "untagged"
    """No tag at all; the whole text is the answer."""
    EMPTY = "empty"
    """The text was empty or only whitespace."""


class _Channel(Enum):
    THINKING = "thinking"
    REFLECTION = "reflection"
    OUTPUT = "output"
    OUTSIDE = "outside"


@dataclass(frozen=True)
class TagDelta:
    """A piece of one channel's text, emitted by :class:`StreamParser` as soon as it is sure.

    ``index`` is the block the text belongs to: ``Parsed.thinking[index]`` for thinking,
    ``Parsed.reflections[index]`` for reflections, always 0 for output and outside text.
    """

    text: str
    index: int = 0


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


@dataclass(frozen=True)
class Parsed:
    """A reply split into its parts. ``output`` is what a user should see as the answer."""

    output: str
    thinking: list[str] = field(default_factory=list)
    reflections: list[str] = field(default_factory=list)
    outside: str = ""
    status: ParseStatus = ParseStatus.COMPLETE
    outputs: list[str] = field(default_factory=list)
    """Every output block's text, in order, including replaced and empty ones."""
    superseded: int = 0
    """How many of :attr:`outputs` (from the first) a later answer replaced; the answer is the
    rest, joined by a blank line."""

    @property
    def followed_format(self) -> bool:
        """True when the answer came from a real, closed output block."""
        return self.status is ParseStatus.COMPLETE


class _Match(Enum):
    TAG = 1
    PARTIAL = 2
    NONE = 3


class _TagMatcher:
    """Recognises the tags of a set of names at a ``<`` in a string, or says it may be one."""

    def __init__(self, names: dict[str, _Channel]) -> None:
        self._names = {name.casefold(): channel for name, channel in names.items()}
        # Where a tag may start: "<" then a space, "/", any non-ASCII character, or an ASCII
        # letter a name starts with (in either case). Finding the next one is C code, so text
        # full of other "<"s ("a<b", HTML) goes by at the speed of str.find.
        firsts = {name[0] for name in self._names if name[0].isascii()}
        ascii_firsts = "".join(sorted(firsts | {c.upper() for c in firsts}))
        self.candidates = re.compile(
            r"<(?=[\s/]|[^\x00-\x7f]|[" + re.escape(ascii_firsts) + "])"
            if ascii_firsts
            else r"<(?=[\s/]|[^\x00-\x7f])"
        )

    def find(self, s: str, p: int) -> int:
        """The next "<" at or after ``p`` that may start a tag (or a "<" ending ``s``), or -1."""
        found = self.candidates.search(s, p)
        if found is not None:
            return found.start()
        return len(s) - 1 if s.endswith("<") and len(s) - 1 >= p else -1

    def match(self, s: str, j: int) -> tuple[_Match, int, bool, _Channel | None]:
        """Match a tag starting at ``s[j] == '<'``: (result, end, is_closing, channel)."""
        shape = _SHAPE.match(s, j)
        assert shape is not None  # every part of the pattern is optional
        spaces = (shape.end(1) - shape.start(1), shape.end(3) - shape.start(3))
        if max(spaces) > _MAX_SPACES:
            return (_Match.NONE, j + 1, False, None)
        word = shape.group(4)
        if len(word) > _MAX_NAME:
            return (_Match.NONE, j + 1, False, None)
        key = word.casefold()
        n = len(s)
        if shape.end(4) == n:
            if any(name.startswith(key) for name in self._names):
                return (_Match.PARTIAL, j, False, None)
            return (_Match.NONE, j + 1, False, None)
        channel = self._names.get(key)
        if channel is None or shape.end(5) - shape.start(5) > _MAX_SPACES:
            return (_Match.NONE, j + 1, False, None)
        if shape.end(5) == n:
            return (_Match.PARTIAL, j, False, None)
        if not shape.group(6):
            return (_Match.NONE, j + 1, False, None)
        return (_Match.TAG, shape.end(), bool(shape.group(2)), channel)


# --- Mentions: a tag the text talks about rather than uses -----------------------------------

_MORE = -1
"""A mention check's answer when the text after the tag does not decide yet."""

_LOOKBEHIND = 32
_MAX_SEQUENCE = 6
_HSPACE = " \t"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NOUNS = _words(
    "tag tags block blocks section sections element elements marker markers delimiter "
    "delimiters field fields part parts pair pairs label labels wrapper wrappers bracket "
    "brackets token tokens format"
)
_LEAD_WORDS = _words(
    # determiners
    "the a an my your his her its our their this that these those each every any another "
    "same first last final new own separate proper appropriate corresponding "
    # prepositions
    "in into inside within with without using via of between before after from by as for "
    "to at about around under "
    # verbs that take a tag as their object
    "use uses write writes put puts add adds wrap wraps open opens opening close closes closing "
    "include includes insert inserts emit emits enclose encloses place places"
)
_SEPARATOR_SYMBOLS = ("...", "…", ",", "/", "&", "+", "-", "–", "—")
_SEPARATOR_WORDS = ("and", "or", "then", "to", "vs")
_QUICK_USE = frozenset(_HSPACE + "<" + "".join(s[0] for s in _SEPARATOR_SYMBOLS))
_QUOTES = {"`": "`", '"': '"', "'": "'", "“": '”"', "‘": "’'", "«": "»"}
_BEFORE_QUOTE = frozenset("([{:,;")
_SENTENCE_GOES_ON = frozenset(",;:.!?)…")
_MAY_MENTION = _QUICK_USE | _SENTENCE_GOES_ON
_LEAD = re.compile(r"(?:^|[\s(\[{\"'`*_])([^\W\d_]+)[ \t]{1,3}\Z")
_LEAD_MIDLINE = re.compile(r"[\s(\[{\"'`*_]([^\W\d_]+)[ \t]{1,3}\Z")


def _skip_hspace(w: str, p: int) -> int:
    n = len(w)
    while p < n and w[p] in _HSPACE:
        p += 1
    return p


class _Mentions:
    """Tells, at a tag, whether the text uses it or names it (see the module docstring)."""

    def __init__(self, matcher: _TagMatcher) -> None:
        self._matcher = matcher

    def check(self, behind: str, w: str, complete: bool) -> int | None:
        """``behind``: the text before the tag (up to :data:`_LOOKBEHIND` characters, a newline
        standing for the start of the text); ``w``: up to :data:`LOOKAHEAD` characters after it;
        ``complete``: no more text can follow ``w``. Returns None for a use, the length of ``w``
        that belongs to the mention, or :data:`_MORE` when the text after ``w`` could decide."""
        quote = _opening_quote(behind)
        if quote is None and w and w[0] not in _MAY_MENTION:
            return None  # the usual case: content or a newline right after the tag
        lead = _lead_word(behind)
        if quote is not None:
            end = _quote_end(w, quote, complete)
            if end is not None:
                return end
        seq_end, more = self._sequence(w, complete)
        if more:
            return _MORE
        noun = _noun_after(w, seq_end, complete)
        if noun is True:
            return seq_end
        sentence: bool | None = False
        if lead is not None:
            sentence = _sentence_goes_on(w, seq_end, complete)
            if sentence is True:
                return seq_end
        if noun is None or sentence is None:
            return _MORE
        return None

    def _sequence(self, w: str, complete: bool) -> tuple[int, bool]:
        """The end of a run of tags after the first (``<thinking> and <output>``): (end, more)."""
        seq_end = p = 0
        n = len(w)
        for _ in range(_MAX_SEQUENCE - 1):
            q, more = _separator(w, p, complete)
            if more:
                return seq_end, True
            if q == n:
                return seq_end, not complete
            if w[q] != "<":
                break
            kind, end, _, _ = self._matcher.match(w, q)
            if kind is _Match.PARTIAL:
                if complete:
                    break
                return seq_end, True
            if kind is _Match.NONE:
                break
            seq_end = p = end
        return seq_end, False


def _opening_quote(behind: str) -> str | None:
    """The closing quotes to look for when the tag follows an opening quote."""
    if len(behind) < 2:
        return None
    closers = _QUOTES.get(behind[-1])
    before = behind[-2]
    if closers is None or not (before.isspace() or before in _BEFORE_QUOTE):
        return None
    return closers


def _lead_word(behind: str) -> str | None:
    line_start = behind.rfind("\n")
    if line_start >= 0:
        match = _LEAD.search(behind[line_start + 1 :])
    else:
        match = _LEAD_MIDLINE.search(behind)
    if match is None:
        return None
    word = match.group(1).lower()
    return word if word in _LEAD_WORDS else None


def _quote_end(w: str, closers: str, complete: bool) -> int | None:
    """Where the quoted span closes on the tag's line: its length, :data:`_MORE`, or None."""
    line_end = w.find("\n")
    stop = len(w) if line_end < 0 else line_end
    ends = [e for closer in closers if (e := w.find(closer, 0, stop)) >= 0]
    if ends:
        return min(ends)
    return None if complete or line_end >= 0 else _MORE


def _separator(w: str, p: int, complete: bool) -> tuple[int, bool]:
    """Skip spaces and up to two joining signs or words after ``p``: (position, more)."""
    n = len(w)
    for _ in range(2):
        q = _skip_hspace(w, p)
        if q == n:
            return q, not complete
        rest = w[q : q + 3]
        symbol = next((s for s in _SEPARATOR_SYMBOLS if rest.startswith(s)), None)
        if symbol is not None:
            p = q + len(symbol)
            continue
        if not complete and len(rest) < 3 and "...".startswith(rest):
            return q, True  # "." or ".." may still become "..."
        if q == p:
            return q, False  # a joining word needs a space before it
        e = q
        while e < n and w[e].isalpha():
            e += 1
        word = w[q:e]
        if e == n and not complete and any(s.startswith(word) for s in _SEPARATOR_WORDS):
            return q, True
        if word not in _SEPARATOR_WORDS or (e < n and w[e] not in _HSPACE and w[e] != "<"):
            return q, False
        p = e
    return _skip_hspace(w, p), False


def _noun_after(w: str, p: int, complete: bool) -> bool | None:
    """Whether a noun for a tag ("tags", "block") follows ``p`` after a space; None: unknown."""
    q = _skip_hspace(w, p)
    n = len(w)
    if q == n:
        return None if not complete else False
    if q == p or not w[q].islower():
        return False
    e = q
    while e < n and w[e].isalnum():
        e += 1
    if e == n and not complete:
        return None
    return w[q:e] in _NOUNS


def _sentence_goes_on(w: str, p: int, complete: bool) -> bool | None:
    """After an opening tag named as a word: does the sentence go on (a space and a lower-case
    word, or punctuation) rather than the block's content start? None: unknown yet."""
    q = _skip_hspace(w, p)
    if q == len(w):
        return None if not complete else False
    char = w[q]
    if char in _SENTENCE_GOES_ON:
        return True
    return q > p and char.islower()


# --- Streaming --------------------------------------------------------------------------------


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


def parse(text: str, scheme: TagScheme = REFLECTION_TAGS) -> Parsed:
    """Split a model reply into answer, reasoning and reflections. Never raises on model text."""
    parser = StreamParser(scheme)
    parser.feed(text)
    parser.close()
    return parser.result


async def aparse(text: str, scheme: TagScheme = REFLECTION_TAGS) -> Parsed:
    """:func:`parse` for async code: a text longer than :data:`PARSE_IN_THREAD_CHARS` is parsed
    in a worker thread, so the event loop goes on serving others meanwhile."""
    if len(text) > PARSE_IN_THREAD_CHARS:
        return await asyncio.to_thread(parse, text, scheme)
    return parse(text, scheme)


def escape_tags(text: str, names: tuple[str, ...] | TagScheme) -> str:
    """Neutralise every tag of ``names`` in ``text`` so no parser or model reads it as a tag.

    The ``<`` of each tag the parser would recognise becomes ``&lt;`` (mentions too: escaping
    more than needed is harmless). Used on user text and drafts before they go into a prompt, so
    a question that contains ``<output>…</output>`` can never forge the final answer.
    """
    tag_names = names.names if isinstance(names, TagScheme) else names
    if "<" not in text or not tag_names:
        return text
    matcher = _TagMatcher(dict.fromkeys(tag_names, _Channel.OUTSIDE))
    pieces: list[str] = []
    i = 0
    while (j := matcher.find(text, i)) >= 0:
        pieces.append(text[i:j])
        kind, end, _, _ = matcher.match(text, j)
        if kind is _Match.TAG:
            pieces.append("&lt;" + text[j + 1 : end])
            i = end
        else:
            pieces.append("<")
            i = j + 1
    pieces.append(text[i:])
    return "".join(pieces)
