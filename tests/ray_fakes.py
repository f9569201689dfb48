"""Fake models that exist in every process of a Ray test cluster.

A fake lives in the process that made it, and Ray actors are other processes: the tests' cluster
runs :func:`register` in each worker process as it starts (Ray's ``worker_process_setup_hook``),
and the test module calls it too, so the same model names answer the same way on the driver and
on every actor. Both fakes are pure functions of the request, so a file written in process and
one written on Ray hold the same answers.
"""

from __future__ import annotations

import re

from reflectkit.testing import FunctionLLM, Request, fail

__all__ = ["ECHO", "ORACLE", "register"]

ECHO = "reflectkit-test/ray-echo"
"""Answers each question in upper case; a question with 'boom' in it fails (HTTP 400)."""
ORACLE = "reflectkit-test/ray-oracle"
"""A recycling oracle: improves what it is shown in tagged sections; 'boom' fails it."""


def _echo(request: Request) -> str:
    text = request.last_user_text
    if "boom" in text:
        raise fail(400, "the provider refused")
    return f"<output>{text.upper()}</output>"


def _between(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return match.group(1) if match else ""


def _oracle(request: Request) -> str:
    prompt = request.last_user_text
    if "boom" in prompt:
        raise fail(400, "the oracle refused")
    if "<new_instruction>" in prompt:
        instruction = _between(prompt, "instruction")
        return (
            "<analysis>clear</analysis>\n"
            f"<new_instruction>{instruction} Explain why.</new_instruction>\n"
            "<new_input>None</new_input>\n"
            f"<new_response>An answer to: {instruction}</new_response>"
        )
    return f"<analysis>fine</analysis><new_response>{_between(prompt, 'response')}!</new_response>"


def register() -> None:
    """Make (or remake) the fakes in this process, and block hosted models as the suite does.

    In a worker it also imports the loop and LiteLLM: Ray starts idle workers ahead of need, so
    an actor placed on one starts with them loaded, and the suite waits less for each batch."""
    import reflectkit.api  # noqa: F401  (the loop: LangGraph)
    from reflectkit.models.provider import set_model_requests_allowed
    from reflectkit.models.registry import load_litellm

    FunctionLLM(_echo, name=ECHO.split("/")[1])
    FunctionLLM(_oracle, name=ORACLE.split("/")[1])
    set_model_requests_allowed(False)
    load_litellm()
