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

This module is the protocol's public home: every name above is imported from here. The parts
live in private modules below it: ``_tag_results`` (what a parse gives back), ``_tag_lexer``
(schemes, recognising and escaping tags), ``_tag_mentions`` (mention or use) and ``_tag_stream``
(the state machine).
"""

from __future__ import annotations

import asyncio

from reflectkit._tag_lexer import REFLECTION_TAGS, THINK_TAGS, TagScheme, escape_tags
from reflectkit._tag_mentions import LOOKAHEAD
from reflectkit._tag_results import Parsed, ParseStatus
from reflectkit._tag_stream import (
    PROVISIONAL_AFTER,
    OutputDelta,
    OutputReset,
    OutsideDelta,
    ReflectionDelta,
    StreamParser,
    TagDelta,
    ThinkingDelta,
)

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

PARSE_IN_THREAD_CHARS = 256 * 1024
"""Replies longer than this are parsed in a worker thread by :func:`aparse` (and by the loop's
nodes), so a long parse never holds up the event loop; shorter ones are parsed inline."""


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
