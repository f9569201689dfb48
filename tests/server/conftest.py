"""Fixtures the server tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.test_hostile_upstream import HostileUpstream, serving


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[HostileUpstream]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (tests/server/test_hostile_upstream.py),
    one per test module; each test scripts its answers."""
    with serving(HostileUpstream()) as upstream:
        yield upstream
