"""``reflectkit serve`` at scale: worker processes, settings from the environment, and a
graceful stop, each against the real command in a process of its own, in front of the fake
upstream (tests/upstream.py), with the real ``openai`` client."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from reflectkit.cli.app import cli
from reflectkit.config import RetryPolicy
from reflectkit.errors import ConfigurationError
from reflectkit.server import ServerSettings
from reflectkit.server.running import worker_environment
from reflectkit.server.settings import ENV_PREFIX, env_var
from tests.upstream import REPLY

KEY = "scale-proxy-key-31c9e2"
UPSTREAM_KEY = "sk-upstream0123456789abcdef"
MODEL = "openai/upstream"
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _upstream(*args: str) -> Iterator[str]:
    """tests/upstream.py in a process of its own; its base URL."""
    command = [sys.executable, "-m", "tests.upstream", "--port", "0", *args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{proc.stdout.readline().split()[1]}/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class _Serve:
    """``python -m reflectkit serve`` running, its output going to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "reflectkit", "serve", "--port", str(self.port), *args]
        with log.open("w") as sink:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=sink
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "reflectkit serve did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Serve]:
    """``reflectkit serve --workers 2`` in front of the fake upstream. The served model, the
    switches and the upstream's arguments come from the environment, some overridden by flags:
    what reaches the workers is what the flags and the environment say together."""
    # Streams take 2 s (five chunks 0.4 s apart): the last test stops the server mid-stream.
    with _upstream("--delay", "0", "--chunk-delay", "0.4") as upstream:
        env = {
            "REFLECTKIT_SERVER_API_KEY": KEY,
            "REFLECTKIT_SERVER_MODELS": MODEL,  # no -m: from the environment
            "REFLECTKIT_SERVER_PASSTHROUGH": "false",  # --passthrough below wins
            "REFLECTKIT_SERVER_WORKERS": "1",  # --workers 2 below wins
            "REFLECTKIT_SERVER_UPSTREAM_KWARGS": json.dumps(
                {"api_base": upstream, "api_key": UPSTREAM_KEY}
            ),
            "REFLECTKIT_SERVER_LOG_LEVEL": "warning",
        }
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        server = _Serve(["--workers", "2", "--passthrough"], env, log)
        try:
            yield server
        finally:
            server.stop()


def test_two_workers_serve_the_real_openai_client(workers: _Serve) -> None:
    messages: Any = [{"role": "user", "content": "What is 2 + 2?"}]
    with openai.OpenAI(base_url=f"{workers.url}/v1", api_key=KEY, max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == [f"reflect/{MODEL}", MODEL]
        for _ in range(4):  # several connections, so both workers answer some
            plain = sdk.chat.completions.create(model=MODEL, messages=messages)
            assert plain.choices[0].message.content == REPLY  # as the upstream wrote it
        stream = sdk.chat.completions.create(
            model=f"reflect/{MODEL}",
            messages=messages,
            stream=True,
            extra_body={"reflectkit": {"mode": "single"}},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "The answer is 4."
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert missing.value.code == "model_not_found"
    wrong = openai.OpenAI(base_url=f"{workers.url}/v1", api_key="wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    banner = workers.log.read_text()
    assert "(API key required, 2 workers)" in banner
    for secret in (KEY, UPSTREAM_KEY):
        assert secret not in banner


def test_settings_come_from_the_environment_below_what_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ServerSettings.model_fields:
        monkeypatch.delenv(env_var(name), raising=False)
    assert ServerSettings().timeout == 120.0  # the default
    monkeypatch.setenv("REFLECTKIT_SERVER_TIMEOUT", "5")
    monkeypatch.setenv("REFLECTKIT_SERVER_MODELS", "a/b, c/*")
    monkeypatch.setenv("REFLECTKIT_SERVER_RUN_LOG", "true")
    monkeypatch.setenv("REFLECTKIT_SERVER_RETRY", '{"max_attempts": 2}')
    settings = ServerSettings()
    assert (settings.timeout, settings.models, settings.run_log) == (5.0, ("a/b", "c/*"), True)
    assert settings.retry.max_attempts == 2
    assert ServerSettings(timeout=7).timeout == 7.0  # given wins over the environment
    monkeypatch.setenv("REFLECTKIT_SERVER_MODELS", '["x/y"]')
    assert ServerSettings().models == ("x/y",)
    monkeypatch.setenv("REFLECTKIT_SERVER_TIMEOUT", "")  # empty is unset
    assert ServerSettings().timeout == 120.0


def test_workers_read_back_every_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = ServerSettings(
        api_key="k" * 20,
        models=("openai/a", "anthropic/*"),
        passthrough=False,
        mode="loop",
        critic_model="openai/a",
        upstream_kwargs={"api_base": "http://127.0.0.1:1/v1", "api_key": "sk-x", "n": [1]},
        retry=RetryPolicy(max_attempts=2),
        run_log="/tmp/runs",
        workers=3,
        graceful_timeout=0,
        log_level="debug",
    )
    for name, value in worker_environment(settings).items():
        assert name.startswith(ENV_PREFIX)
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ServerSettings() == settings


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REFLECTKIT_SERVER_PORT", "eighty", "REFLECTKIT_SERVER_PORT: Input should be a valid"),
        ("REFLECTKIT_SERVER_WORKERS", "0", "REFLECTKIT_SERVER_WORKERS: Input should be greater"),
        (
            "REFLECTKIT_SERVER_UPSTREAM_KWARGS",
            '{"api_key": "sk-secret-in-bad-json',
            "REFLECTKIT_SERVER_UPSTREAM_KWARGS: not valid JSON",
        ),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    variable: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        ServerSettings()
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("reflectkit: error: invalid ServerSettings: ")
    assert message in line
    assert "sk-secret" not in line


@pytest.fixture
def _bad_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLECTKIT_SERVER_PORT", "eighty")


@pytest.mark.usefixtures("_bad_port")
def test_a_flag_wins_over_a_bad_environment_value() -> None:
    assert ServerSettings(port=8100).port == 8100


def _stream(url: str, into: list[str]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            for line in response.iter_lines():
                into.append(line)
    except httpx.HTTPError as error:  # the server cut the stream
        into.append(f"<broken: {type(error).__name__}>")
        return
    into.append("<closed>")


def _refused(url: str) -> None:
    """Wait until a new connection to ``url`` is refused (the supervisor polls for signals
    every 0.5 s, its workers every 0.1 s: on a busy machine it takes a moment, and a connection
    made meanwhile may be closed unanswered)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return
        except httpx.RemoteProtocolError:
            pass  # taken just as a worker stopped listening, then closed unanswered
        assert time.monotonic() < deadline, "new connections are still taken"
        time.sleep(0.1)


def _first_data(lines: list[str]) -> None:
    deadline = time.monotonic() + 30
    while not any(line.startswith("data: ") for line in lines):
        assert time.monotonic() < deadline, "the stream did not start"
        time.sleep(0.02)


def test_after_the_grace_period_an_open_stream_is_cut_and_logged(tmp_path: Path) -> None:
    with _upstream("--delay", "0", "--chunk-delay", "2") as upstream:
        args = ["-m", MODEL, "-o", f"api_base={upstream}", "-o", "api_key=none"]
        args += ["--graceful-timeout", "0.5", "--log-level", "warning"]
        server = _Serve(args, {"REFLECTKIT_SERVER_API_KEY": KEY}, tmp_path / "serve.log")
        try:
            lines: list[str] = []
            client = threading.Thread(target=_stream, args=(server.url, lines))
            client.start()
            _first_data(lines)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(30) == 0
            assert time.monotonic() - started < 5  # not the 10 s the stream would take
            client.join(30)
        finally:
            server.stop()
    assert "data: [DONE]" not in lines
    assert lines[-1].startswith("<broken")
    log = server.log.read_text()
    assert "timeout graceful shutdown exceeded" in log
    assert "503 server_stopping" in log


def test_sigterm_lets_a_stream_finish_and_refuses_new_connections(workers: _Serve) -> None:
    """Last in the file: it stops the module's server (two workers), mid-stream."""
    lines: list[str] = []
    client = threading.Thread(target=_stream, args=(workers.url, lines))
    client.start()
    _first_data(lines)
    workers.proc.send_signal(signal.SIGTERM)
    _refused(f"{workers.url}/health")  # once the workers have seen the signal
    client.join(30)
    assert workers.proc.wait(30) == 0
    assert [line for line in lines if line][-2:] == ["data: [DONE]", "<closed>"]
    assert workers.log.read_text().strip().splitlines()[-1] == "reflectkit: stopped by SIGTERM"


def test_the_docs_list_every_setting_and_its_variable() -> None:
    page = (ROOT / "docs" / "server.md").read_text()
    listed = re.findall(r"^\| `(REFLECTKIT_SERVER_[A-Z_]+)` \|", page, flags=re.MULTILINE)
    assert listed == [env_var(name) for name in ServerSettings.model_fields]
