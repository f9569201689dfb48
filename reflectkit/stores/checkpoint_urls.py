"""Checkpointer URLs without their secrets: what messages and logs may show of a URL.

A ``postgresql://`` URL may carry a password (``user:password@host``) or a secret-named query
value (``?password=...``, ``sslpassword``). :func:`display_url` is the URL fit for a message or
the checkpointer's ``location``, and :func:`url_secrets` the values to redact from the errors
of a connection to it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from reflectkit.redaction import REDACTED, is_secret_name, redact

__all__ = ["URL", "display_url", "url_secrets"]

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A setting that starts like this (a scheme, then ``://``) is a URL, not a file path."""


def display_url(url: str) -> str:
    """``url`` fit for a message: no ``user:password@``, secret-named query values redacted.
    ``url`` must have passed :func:`urlsplit` (see ``Checkpointer._check``)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    query = urlencode(
        [
            (name, REDACTED if is_secret_name(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="[]",
    )
    return redact(urlunsplit((parts.scheme, hosts, parts.path, query, parts.fragment)))


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` (as written and percent-decoded) and secret-named query values."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo.partition(":")[2]] if ":" in userinfo else []
    found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k)]
    return [s for value in found if value for s in {value, unquote(value)}]
