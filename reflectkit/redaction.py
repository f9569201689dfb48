"""Keep secrets out of messages, logs, traces and saved configurations.

Provider errors can echo request details, and configurations carry ``api_key`` and friends.
Everything reflectkit shows or stores passes through here first.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "REDACTED",
    "environment_secrets",
    "is_secret_name",
    "one_line",
    "redact",
    "redact_mapping",
    "snapshot",
]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"(key|token|secret|password|passwd|credential|auth|cookie)", re.IGNORECASE
)

# Where a word of a name starts: after anything but a letter or digit (``_``, ``-``, ``.``, a
# quote, a space), or at a camelCase hump (``apiKey``, ``SecretAccessKey``).
_WORD_START = r"(?:(?<![A-Za-z0-9])|(?<=[a-z0-9])(?=[A-Z]))"
# Between a name and its value: ``=`` or ``:``, after the quote that closes a JSON or repr key
# (``"api_key": ``, ``'api_key': ``, ``\"api_key\": `` in JSON inside a JSON string).
_SEPARATOR = r"""\\?["']?[ \t]*[:=][ \t]*"""
# A name that says its value is a secret, ending in one of these words: ``api_key``,
# ``OPENAI_API_KEY``, ``apiKey``, ``aws_secret_access_key``, ``SecretAccessKey``,
# ``auth_token``, ``client_secret``, ``DB_PASSWORD``. The separator must follow the word at
# once, so ``prompt_tokens: 1234567``, ``tokenizer=gpt2`` and ``secretary: Smith`` stay.
_SECRET_WORD = (
    r"(?i:api[_-]?key|access[_-]?key|secret(?:[_-]?access)?(?:[_-]?key)?|private[_-]?key"
    r"|token|password|passwd|passphrase|pwd|credentials?|auth)"
)
# Its value: quoted, everything up to the same quote (at least 4 characters); bare, at least 6
# characters up to a space, quote, comma, ampersand, semicolon or bracket. Code is no exception:
# ``token = get_token()`` becomes ``token = [redacted]()``, as a secret followed by a bracket
# (``token=3f9a...(expired)``) must go too.
_SECRET_VALUE = (
    r"""(?:\\"(?P<v1>[^"\\\r\n]{4,})(?=\\")"""
    r"""|"(?P<v2>(?:\\.|[^"\\\r\n]){4,})(?=")"""
    r"""|'(?P<v3>(?:\\.|[^'\\\r\n]){4,})(?=')"""
    r"""|(?P<v4>[^\s"'`,;&<>()\[\]{}\\]{6,}))"""
)
# Headers whose whole value is the credential, spaces and all: ``Authorization: Basic
# dXNlcjpw`` (a scheme and the rest of the line, or one long token) and cookies (``Cookie:
# a=1; b=2``, to the end of the line). Quoted, the value runs to its closing quote.
_QUOTED_HEADER = (
    r"""\\"(?P<h1>[^"\\\r\n]+)(?=\\")"""
    r"""|"(?P<h2>(?:\\.|[^"\\\r\n])+)(?=")"""
    r"""|'(?P<h3>(?:\\.|[^'\\\r\n])+)(?=')"""
)
_AUTH_SCHEMES = r"(?i:basic|bearer|digest|token|negotiate|ntlm|hmac|apikey|aws4-hmac-sha256)"
_AUTHORIZATION = (
    rf"{_WORD_START}(?i:(?:proxy-)?authorization){_SEPARATOR}"
    rf"""(?:{_QUOTED_HEADER}|(?P<h4>{_AUTH_SCHEMES}[ \t]+[^\r\n]+|[^\s"',;]{{8,}}))"""
)
_COOKIE = (
    rf"{_WORD_START}(?i:(?:set-)?cookie){_SEPARATOR}"
    rf"""(?:{_QUOTED_HEADER}|(?P<h4>[^\s"';,=]+=[^\r\n]*))"""
)
# ``scheme://user:password@host``: the password goes, the user name stays; a long user name
# without a password is a token (``https://<token>@github.com``) and goes too.
_USERINFO = (
    r"""(?i:\b[a-z][a-z0-9+.-]*://)"""
    r"""(?:[^\s/?#@:"'<>]*:(?P<u1>[^\s/?#"'<>]+)|(?P<u2>[^\s/?#@:"'<>]{16,}))@"""
)
# A private key's body between its BEGIN and its END line (or, when the END line was cut off,
# to where the base64 stops); JSON-escaped line breaks (``\n``) count as line breaks.
_PEM = (
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----"
    r"(?P<p1>(?:[A-Za-z0-9+/=:,.\s-]|\\[nr])*?)"
    r"(?:-----END (?P=kind)PRIVATE KEY(?: BLOCK)?-----|(?=[^A-Za-z0-9+/=:,.\s\\-])|\Z)"
)
# Credentials recognisable by their shape wherever they appear, each anchored on a prefix that
# ordinary words, hashes and plain URLs do not have. These go whole.
_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA")
_SHAPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\bsk-[A-Za-z0-9_\-]{8,}", ("sk-",)),  # OpenAI, Anthropic (sk-ant-...)
    (r"(?i:\bbearer)\s+[A-Za-z0-9._~+/\-]{8,}=*", ("bearer",)),  # a bearer token, anywhere
    (rf"\b(?:{'|'.join(_AWS_PREFIXES)})[A-Z0-9]{{16}}\b", tuple(map(str.lower, _AWS_PREFIXES))),
    (r"\bgh[pousr]_[A-Za-z0-9]{20,}", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),  # GitHub
    (r"\bgithub_pat_[A-Za-z0-9_]{20,}", ("github_pat_",)),  # GitHub fine-grained tokens
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", ("xox",)),  # Slack bot, user and legacy tokens
    (r"\bxapp-[0-9]-[A-Za-z0-9-]{10,}", ("xapp-",)),  # Slack app-level tokens
    (r"\bhf_[A-Za-z0-9]{30,}", ("hf_",)),  # Hugging Face
    (r"\bAIza[0-9A-Za-z_\-]{30,}", ("aiza",)),  # Google API keys
    (r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", ("eyj",)),  # JWTs
)
_NAMED_WORDS = ("key", "secret", "token", "pass", "pwd", "credential", "auth")
# In the order they run, each with the words (lower case) a text must contain for it to run at
# all: most texts redacted (drafts, verdicts, the keys of saved records) have none, and a
# substring test costs far less than a regex pass. A PEM body and whole header values go first
# (they hold words the others would cut in the middle), then named values, URL passwords, and
# shapes.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), words)
    for pattern, words in (
        (_PEM, ("-----begin",)),
        (_AUTHORIZATION, ("authorization",)),
        (_COOKIE, ("cookie",)),
        (rf"{_WORD_START}{_SECRET_WORD}{_SEPARATOR}{_SECRET_VALUE}", _NAMED_WORDS),
        (_USERINFO, ("://",)),
        *_SHAPES,
    )
)
_MIN_SECRET_LENGTH = 6


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """True for names like ``api_key``, ``OPENAI_API_KEY``, ``auth_token`` (cached: names repeat,
    as the keys of every record a store writes do)."""
    return bool(_SECRET_NAME.search(name))


@functools.lru_cache(maxsize=8)
def _secret_names(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(name for name in names if is_secret_name(name)))


_snapshot: ContextVar[tuple[str, ...] | None] = ContextVar("reflectkit_secrets", default=None)


def environment_secrets() -> tuple[str, ...]:
    """The values of secret-named environment variables, read now (the environment may change
    between calls) unless a :func:`snapshot` is in force. Which names look secret is cached per
    set of variable names, so a call costs a few microseconds, not a regex per variable."""
    taken = _snapshot.get()
    if taken is not None:
        return taken
    environ = os.environ
    found = (environ.get(name, "") for name in _secret_names(frozenset(environ)))
    return tuple(value for value in found if len(value) >= _MIN_SECRET_LENGTH)


@contextmanager
def snapshot() -> Iterator[None]:
    """Read the environment's secrets once for everything redacted inside the block: for bulk
    work such as recording a run, where thousands of strings are redacted at once."""
    token = _snapshot.set(environment_secrets())
    try:
        yield
    finally:
        _snapshot.reset(token)


@functools.lru_cache(maxsize=32)
def _longest_first(values: frozenset[str]) -> tuple[str, ...]:
    """Secret values to replace, longest first (so one containing another is replaced whole)."""
    kept = (value for value in values if len(value) >= _MIN_SECRET_LENGTH)
    return tuple(sorted(kept, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values (the environment's and ``secrets``) and key-like strings."""
    for value in _longest_first(frozenset((*secrets, *environment_secrets()))):
        if value in text:
            text = text.replace(value, REDACTED)
    lowered = text.lower()
    for pattern, words in _SECRET_PATTERNS:
        if any(word in lowered for word in words):
            text = pattern.sub(_hide, text)
    return text


def _hide(match: re.Match[str]) -> str:
    """The match with its secret replaced: the value group that matched, or all of it."""
    for name, value in match.groupdict().items():
        if value is not None and name != "kind":
            start, end = match.span(name)
            whole = match.string
            return f"{whole[match.start() : start]}{REDACTED}{whole[end : match.end()]}"
    return REDACTED


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with secret-named entries replaced and nested mappings redacted."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if is_secret_name(name) and value is not None:
            clean[name] = REDACTED
        elif isinstance(value, Mapping):
            clean[name] = redact_mapping(value)
        elif isinstance(value, str):
            clean[name] = redact(value)
        else:
            clean[name] = value
    return clean


def one_line(error: BaseException, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """``error`` as one line a log, a run record or a failure file can hold: its message with
    whitespace runs collapsed (its class name when it has none), redacted, and cut to ``limit``
    characters (ending in "...") when given."""
    text = redact(" ".join(str(error).split()) or type(error).__name__, secrets)
    if limit is not None and len(text) > limit:
        return text[: max(0, limit - 3)] + "..."
    return text
