"""Mentions: a tag the text talks about rather than uses.

Models write about the format ("give the answer in the <output> tags"); such a tag is text, not
a block (the rules are in :mod:`reflectkit.tags`). :class:`_Mentions` decides it at each tag,
from the text before it and at most :data:`LOOKAHEAD` characters after it, and says when the
text after it does not decide yet, so a stream parser holds the tag back until it does.
"""

from __future__ import annotations

import re

from reflectkit._tag_lexer import _Match, _TagMatcher

__all__ = ["LOOKAHEAD"]

LOOKAHEAD = 200
"""The most characters after a tag the parser reads to tell a mention from a use."""

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
    """Tells, at a tag, whether the text uses it or names it (see :mod:`reflectkit.tags`)."""

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
