"""reflectkit's graph served by LangGraph's own server (``langgraph dev``, in memory): threads,
runs, streaming and the settings a caller may give, through the platform's real HTTP API, with
the embedded local model. The server runs graphs under its blocking-call detector, so a blocking
call on its event loop fails these runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reflectkit.config import ReflectConfig
from reflectkit.errors import ConfigurationError
from reflectkit.integrations import langgraph_platform
from reflectkit.integrations.langgraph_platform import settings_from

ROOT = Path(__file__).resolve().parent.parent
QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}]}
SETTINGS = {"mode": "single", "max_tokens": 24}


def test_the_repository_langgraph_json_names_the_factory() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    module, _, name = config["graphs"]["reflect"].partition(":")
    assert module == langgraph_platform.__name__
    assert name == "make_graph"


def test_settings_are_read_from_one_key_and_checked() -> None:
    config = {
        "configurable": {
            "thread_id": "t",  # the platform's own keys are left alone
            "reflectkit": {"model": "local/smollm2-135m", "max_iterations": 2, "temperature": 0},
        }
    }
    settings = settings_from(config)
    assert settings == {
        "model": "local/smollm2-135m",
        "max_iterations": 2,
        "model_kwargs": {"temperature": 0},
    }
    assert ReflectConfig(**settings).max_iterations == 2
    assert settings_from(None) == {} == settings_from({"configurable": {"thread_id": "t"}})
    with pytest.raises(ConfigurationError, match=r"unknown reflectkit setting.*max_iteration\b"):
        settings_from({"configurable": {"reflectkit": {"max_iteration": 2}}})
    with pytest.raises(ConfigurationError, match="api_base"):  # the deployer's, not the caller's
        settings_from({"configurable": {"reflectkit": {"api_base": "http://evil"}}})
    with pytest.raises(ConfigurationError, match="must be an object"):
        settings_from({"configurable": {"reflectkit": "gpt-4o"}})
    with pytest.raises(ConfigurationError, match="plain JSON"):
        settings_from({"configurable": {"reflectkit": {"model": object()}}})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    langgraph = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    assert langgraph is not None, "langgraph-cli is missing: pip install 'reflectkit[platform]'"
    home = tmp_path_factory.mktemp("platform")
    spec = f"{langgraph_platform.__name__}:make_graph"
    (home / "langgraph.json").write_text(
        json.dumps({"dependencies": ["."], "graphs": {"reflect": spec}})
    )
    port = _free_port()
    log = (home / "server.log").open("w")
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false"}
    server = subprocess.Popen(
        [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port)],
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _run(url: str, thread: str, settings: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {
        "assistant_id": "reflect",
        "input": QUESTION,
        "config": {"configurable": {"reflectkit": settings}},
        **extra,
    }
    return httpx.post(f"{url}/threads/{thread}/runs/wait", json=body, timeout=180)


@pytest.mark.local
def test_the_platform_runs_the_graph_on_a_thread_and_keeps_its_state(platform: str) -> None:
    thread = httpx.post(f"{platform}/threads", json={}, timeout=30).json()["thread_id"]
    reply = _run(platform, thread, SETTINGS)
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    assert result["mode"] == "single"
    assert result["model"] == "local/smollm2-135m"
    assert result["usage"]["calls"] >= 1
    assert isinstance(result["output"], str)
    state = httpx.get(f"{platform}/threads/{thread}/state", timeout=30).json()
    assert state["values"]["result"]["output"] == result["output"]  # checkpointed by the platform
    assert [m["content"] for m in state["values"]["messages"]] == ["What is 2+2?"]


@pytest.mark.local
def test_the_platform_streams_the_graphs_steps(platform: str) -> None:
    body = {
        "assistant_id": "reflect",
        "input": QUESTION,
        "config": {"configurable": {"reflectkit": SETTINGS}},
        "stream_mode": ["updates"],
    }
    with httpx.stream("POST", f"{platform}/runs/stream", json=body, timeout=180) as reply:
        assert reply.status_code == 200
        text = "".join(reply.iter_text())
    events = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert "updates" in events
    assert "error" not in events, text[-2000:]
    assert '"generate"' in text


def test_a_bad_setting_fails_the_run_with_reflectkits_message(platform: str) -> None:
    thread = httpx.post(f"{platform}/threads", json={}, timeout=30).json()["thread_id"]
    reply = _run(platform, thread, {"max_iteration": 2})
    assert "unknown reflectkit setting(s) max_iteration" in reply.text
