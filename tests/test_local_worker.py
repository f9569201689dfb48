"""Crash isolation of the embedded model: llama.cpp runs in a worker process, so a native crash,
an abort or a kill of that process is a clear error in the caller, and the caller lives on.

The worker is killed for real (SIGKILL, SIGSEGV, SIGABRT, mid-generation and mid-stream), and a
``llama_cpp`` that segfaults on import stands in for a llama.cpp built for the wrong CPU, for the
command line. Nothing is mocked: the calls go through LiteLLM to the real worker and model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

import reflectkit as rk
from reflectkit.errors import LocalModelCrashError, LocalModelError, ProviderError
from reflectkit.models.llm import Completion, ModelClient, StreamDelta
from reflectkit.models.local import DEFAULT_LOCAL_MODEL
from reflectkit.models.local import supervisor as local_supervisor

pytestmark = pytest.mark.local

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a very long story about a dragon."}]


def client(**params: Any) -> ModelClient:
    return ModelClient(DEFAULT_LOCAL_MODEL, {"temperature": 0, "max_tokens": 24, **params})


async def running_worker() -> int:
    await client(max_tokens=2).complete(QUESTION)
    pid = local_supervisor.worker_pid()
    assert pid is not None
    return pid


async def answers_after(old_pid: int) -> None:
    """The next call starts a fresh worker and answers."""
    result = await client(max_tokens=8).complete(QUESTION)
    assert result.text.strip()
    assert result.usage.completion_tokens > 0
    new_pid = local_supervisor.worker_pid()
    assert new_pid is not None
    assert new_pid != old_pid


@pytest.mark.parametrize(
    ("signum", "expected"),
    [
        (signal.SIGKILL, "was killed (SIGKILL)"),
        (signal.SIGSEGV, "crashed with SIGSEGV inside llama.cpp"),
        (signal.SIGABRT, "aborted (SIGABRT"),
    ],
)
async def test_a_worker_killed_mid_generation_is_one_clear_error(
    signum: int, expected: str
) -> None:
    pid = await running_worker()
    call = asyncio.create_task(client(max_tokens=1500).complete(LONG))
    await asyncio.sleep(1.0)  # the story is being written
    assert not call.done()
    os.kill(pid, signum)

    with pytest.raises(LocalModelError) as caught:
        await call

    error = caught.value
    assert isinstance(error, LocalModelCrashError)
    assert isinstance(error, ProviderError)
    assert not error.retryable
    message = str(error)
    assert expected in message
    assert "\n" not in message
    assert "next call starts a new worker" in message
    assert error.returncode == -signum
    await answers_after(pid)


async def test_a_worker_crashing_mid_stream_ends_the_stream_with_the_error() -> None:
    pid = await running_worker()
    pieces: list[str] = []

    async def read_until_crash() -> None:
        async for item in client(max_tokens=1500).stream(LONG):
            if not isinstance(item, StreamDelta):
                raise AssertionError(f"the stream finished despite the crash: {item}")
            pieces.append(item.text)
            if len(pieces) == 3:
                os.kill(pid, signal.SIGSEGV)

    with pytest.raises(LocalModelCrashError, match=r"SIGSEGV.*reinstall llama\.cpp portably"):
        await read_until_crash()
    assert len(pieces) >= 3  # what had arrived was handed over
    await answers_after(pid)


async def test_every_call_in_flight_gets_its_own_error_and_later_calls_answer() -> None:
    pid = await running_worker()
    calls = [asyncio.create_task(client(max_tokens=1500).complete(LONG)) for _ in range(3)]
    await asyncio.sleep(0.5)
    os.kill(pid, signal.SIGKILL)

    errors = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(e, LocalModelCrashError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # runs annotate their own error object
    await answers_after(pid)


async def test_a_run_whose_worker_dies_fails_as_a_run_error_with_its_id() -> None:
    pid = await running_worker()

    async def kill_soon() -> None:
        await asyncio.sleep(1.0)
        os.kill(pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_soon())
    with pytest.raises(rk.RunError) as caught:
        await rk.areflect(
            "Write a very long story about a dragon.",
            model=DEFAULT_LOCAL_MODEL,
            mode="single",
            max_tokens=1500,
            format_help="off",
            run_log=False,
        )
    await killer
    assert isinstance(caught.value, LocalModelError)
    assert "SIGKILL" in str(caught.value)


async def test_calls_share_one_worker_and_one_loaded_model() -> None:
    pid = await running_worker()
    results = await asyncio.gather(*(client(max_tokens=4).complete(QUESTION) for _ in range(3)))
    assert all(r.text for r in results)
    assert local_supervisor.worker_pid() == pid
    info = local_supervisor.worker_info()
    assert info["pid"] == pid
    assert "CPU" in info["system_info"] or "AVX" in info["system_info"]


async def test_a_hung_worker_is_killed_once_its_call_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_supervisor, "CANCEL_GRACE", 0.5)
    pid = await running_worker()
    stream = client(max_tokens=1500).stream(LONG)
    async for item in stream:
        if isinstance(item, StreamDelta) and item.text:
            os.kill(pid, signal.SIGSTOP)  # a native call that never returns
            break
    await stream.aclose()  # cancels the request; a stopped worker cannot stop generating

    deadline = time.monotonic() + 10
    while local_supervisor.worker_pid() == pid and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the supervisor's own timer kills it: nothing to await
    assert local_supervisor.worker_pid() != pid
    await answers_after(pid)


async def test_cancelling_a_queued_call_never_kills_the_worker_that_serves_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_supervisor, "CANCEL_GRACE", 0.5)
    pid = await running_worker()
    long_call = client(max_tokens=200).stream(LONG)
    first = await anext(long_call)  # the worker is generating it: what follows queues behind
    queued = asyncio.create_task(client(max_tokens=8).complete(QUESTION))
    await asyncio.sleep(0.3)
    queued.cancel()  # it waits behind the long call, which runs for seconds

    *_, result = [first, *[item async for item in long_call]]

    assert isinstance(result, Completion)
    assert result.usage.completion_tokens == 200
    assert local_supervisor.worker_pid() == pid
    assert queued.cancelled()


def test_the_sync_litellm_path_is_isolated_too() -> None:
    litellm_model = DEFAULT_LOCAL_MODEL
    from reflectkit.models.llm import _load

    # reflectkit's own calls to the local model skip LiteLLM; loading LiteLLM through reflectkit
    # registers the provider for anyone who calls LiteLLM directly, as this test does.
    litellm = _load()

    response = litellm.completion(model=litellm_model, messages=QUESTION, max_tokens=4)
    assert response.choices[0].message.content
    pid = local_supervisor.worker_pid()
    assert pid is not None
    chunks = litellm.completion(model=litellm_model, messages=LONG, max_tokens=1500, stream=True)

    def read_until_crash() -> None:
        for seen, _chunk in enumerate(chunks):
            if seen == 2:
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(Exception, match="SIGKILL") as caught:
        read_until_crash()
    assert "next call starts a new worker" in str(caught.value)
    response = litellm.completion(model=litellm_model, messages=QUESTION, max_tokens=4)
    assert response.choices[0].message.content


def test_crash_messages_say_what_happened_and_what_to_do() -> None:
    amx = {"system_info": "CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | OPENMP = 1 |"}
    plain = {"system_info": "CPU : SSE3 = 1 | AVX2 = 1 | OPENMP = 1 |"}

    segv = local_supervisor.crash_message(-signal.SIGSEGV, amx, [])
    assert "built with AMX" in segv
    assert local_supervisor.REINSTALL_COMMAND in segv
    assert "built with AMX" not in local_supervisor.crash_message(-signal.SIGSEGV, plain, [])
    assert "illegal instruction" in local_supervisor.crash_message(-signal.SIGILL, plain, [])
    assert "lacks" in local_supervisor.crash_message(-signal.SIGILL, plain, [])
    assert "built with AMX" in local_supervisor.crash_message(-signal.SIGILL, amx, [])
    assert "out-of-memory" in local_supervisor.crash_message(-signal.SIGKILL, plain, [])
    abort = local_supervisor.crash_message(
        -signal.SIGABRT, plain, ["x", "GGML_ASSERT(n_tokens > 0) failed", ""]
    )
    assert "GGML_ASSERT(n_tokens > 0) failed" in abort
    with_traceback = [
        "GGML_ASSERT(x) failed",
        "Fatal Python error: Aborted",
        "  File x",
        "Extension modules: a",
    ]
    assert "GGML_ASSERT(x) failed" in local_supervisor.crash_message(-6, plain, with_traceback)
    assert "exited with status 3: boom" in local_supervisor.crash_message(3, plain, ["boom"])
    stopped = local_supervisor.crash_message(-signal.SIGKILL, plain, [], killed_by_us=True)
    assert "stopped by reflectkit: a cancelled call did not stop" in stopped
    for code in (-signal.SIGSEGV, -signal.SIGTERM, -99, 0, 1):
        message = local_supervisor.crash_message(code, amx, ["a\nb"])
        assert "\n" not in message.replace("a\nb", "")
        assert message.endswith("the next call starts a new worker")


def test_the_readme_uses_the_portable_build_flags() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f'CMAKE_ARGS="{local_supervisor.PORTABLE_CMAKE_ARGS}"' in readme
    assert "GGML_NATIVE=OFF" in local_supervisor.PORTABLE_CMAKE_ARGS


def test_the_installed_llama_cpp_is_a_portable_build() -> None:
    """What CI installs must run on every x86-64 cloud VM: no AMX, no -march=native."""
    from reflectkit.models.local.engine import build_info

    info = build_info()["system_info"]
    assert "AMX_INT8 = 1" not in info, f"llama.cpp was built natively: {info}"
    if os.uname().machine in ("x86_64", "AMD64"):
        assert "AVX2 = 1" in info
        assert "AVX512 = 1" not in info, f"llama.cpp was built natively: {info}"


CRASHING_LLAMA_CPP = """
import ctypes
ctypes.string_at(0)  # a real segmentation fault, as a build for the wrong CPU would give
"""


def test_the_cli_reports_a_crashing_llama_cpp_in_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text(CRASHING_LLAMA_CPP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    env.pop("REFLECTKIT_MODEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "reflectkit", "run", "What is 2+2?"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("reflectkit: error:")
    assert "SIGSEGV" in lines[0]
    assert "pip install --force-reinstall --no-cache-dir" in lines[0]


async def test_completion_after_crash_reports_real_token_counts() -> None:
    pid = await running_worker()
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    pieces: list[str] = []
    final: Completion | None = None
    async for item in client(max_tokens=12).stream(QUESTION):
        if isinstance(item, StreamDelta):
            pieces.append(item.text)
        else:
            final = item
    assert final is not None
    assert "".join(pieces) == final.text
    assert final.usage.prompt_tokens > 10
    assert 0 < final.usage.completion_tokens <= 12


def test_prestart_starts_the_worker_only_for_a_loadable_local_model() -> None:
    from reflectkit.config import DEFAULT_MODEL
    from reflectkit.models import local

    assert local.DEFAULT_LOCAL_MODEL == DEFAULT_MODEL  # prestart(None) means the default model
    assert local.prestart("gpt-4o-mini") is False
    assert local.prestart("local/no-such-model") is False
    assert local.prestart() is True
    assert local_supervisor.worker_pid() is not None


async def test_the_worker_waits_passively_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """llama.cpp's OpenMP threads must not spin while another process needs the core."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert local_supervisor._worker_env()["OMP_WAIT_POLICY"] == "PASSIVE"
    pid = await running_worker()
    environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)  # its worker
    assert b"OMP_WAIT_POLICY=PASSIVE" in environ.split(b"\0")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert local_supervisor._worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"
