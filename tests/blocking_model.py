"""A fake model that never answers, for tests that stop ``python -m reflectkit run`` with a
signal while it waits for a model.

Fakes live in the process that made them, so the command-line process imports this module
first and then runs reflectkit's ``__main__`` as ``python -m reflectkit`` does (see
:data:`COMMAND`). It serves ``reflectkit-test/blocking``, whose every call writes the file
named by ``$REFLECTKIT_TEST_READY`` (the test's cue that the run is under way) and then waits
until it is cancelled.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from reflectkit.testing import FunctionLLM, Request

READY_ENV_VAR = "REFLECTKIT_TEST_READY"

MODEL = "reflectkit-test/blocking"

COMMAND = [
    sys.executable,
    "-c",
    "import runpy, tests.blocking_model; "
    "runpy.run_module('reflectkit', run_name='__main__', alter_sys=True)",
]
"""``python -m reflectkit`` with this module imported first: append the command's arguments."""


async def _block(request: Request) -> str:
    await asyncio.to_thread(Path(os.environ[READY_ENV_VAR]).touch)
    await asyncio.sleep(3600)
    return "<output>too late</output>"


FAKE = FunctionLLM(_block, name="blocking")
