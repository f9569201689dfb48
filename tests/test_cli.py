"""The command line, in-process through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reflectkit.cli.app import cli
from reflectkit.stores.runlog import RunLog, RunSummary
from reflectkit.testing import FunctionLLM, ScriptedLLM, fail
from tests.conftest import QUESTION, verdict


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, env=env, catch_exceptions=False)


def test_run_prints_only_the_answer() -> None:
    fake = ScriptedLLM(["<thinking>7 - 3</thinking><output>4</output>", verdict(True)])
    result = _run("run", QUESTION, "--model", fake.model)
    assert result.exit_code == 0
    assert result.stdout == "4\n"
    assert result.stderr == ""


def test_the_model_comes_from_the_environment_and_options_pass_through() -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    result = _run(
        "run",
        "2+2",
        "--mode",
        "single",
        "-o",
        "temperature=0",
        "-o",
        "seed=7",
        env={"REFLECTKIT_MODEL": fake.model},
    )
    assert result.exit_code == 0
    assert result.stdout == "4\n"
    assert fake.requests[0].params["temperature"] == 0
    assert fake.requests[0].params["seed"] == 7


def test_show_thinking_goes_to_stderr() -> None:
    fake = ScriptedLLM(
        [
            "<thinking>x = 7, 7 - 3 = 5</thinking><output>5</output>",
            verdict(False, "7 - 3 is 4", score=2),
            "<thinking>7 - 3 = 4</thinking><reflection>fixed</reflection><output>4</output>",
            verdict(True, score=9),
        ]
    )
    result = _run("run", QUESTION, "-m", fake.model, "--show-thinking")
    assert result.exit_code == 0
    assert result.stdout == "4\n"
    assert "x = 7, 7 - 3 = 5" in result.stderr
    assert "critique 1: revise, score 2" in result.stderr
    assert "7 - 3 is 4" in result.stderr
    assert "── reflection (revision 2) ──" in result.stderr
    assert "stop: passed after 2 draft(s), 4 call(s)" in result.stderr


def test_json_output_and_stdin_prompt() -> None:
    fake = ScriptedLLM(["<output>3</output>", verdict(True)])
    result = _run("run", "-", "-m", fake.model, "--json", stdin="How many r's in strawberry?\n")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["output"] == "3"
    assert data["stop_reason"] == "passed"
    assert fake.requests[0].last_user_text == "How many r's in strawberry?"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "q", "-m", "x", "--max-iterations", "0"], "--max-iterations"),
        (["run", "q", "-m", "x", "--mode", "twice"], "--mode"),
        (["run", "q", "-m", "x", "-o", "novalue"], "expected KEY=VALUE"),
        (["run", "   ", "-m", "x"], "the prompt is empty"),
        (["run", "q", "-m", "no-such-provider-model"], "unknown model"),
        (["run", "q", "-m", "x", "--template-dir", "/no/such/dir"], "--template-dir"),
        (["templates", "nope"], "unknown template"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    if "-m" in args and args[args.index("-m") + 1] == "x":
        args[args.index("-m") + 1] = ScriptedLLM([]).model
    result = _run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("reflectkit: error: ")
    assert message in lines[0]


def test_a_failed_run_exits_1() -> None:
    fake = ScriptedLLM([fail(400, "the provider refused")])
    result = _run("run", "q", "-m", fake.model, "--mode", "single")
    assert result.exit_code == 1
    assert result.stderr.startswith("reflectkit: error: ")
    assert "the provider refused" in result.stderr


def test_templates_lists_and_prints() -> None:
    listing = _run("templates")
    assert listing.exit_code == 0
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    from reflectkit.prompts import TEMPLATES

    assert names == list(TEMPLATES)
    assert "exemplar_answer" in names
    shown = _run("templates", "tuned_system")
    assert shown.exit_code == 0
    assert "world-class AI system" in shown.stdout


def _subprocess(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    clean.pop("REFLECTKIT_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "reflectkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def test_help_does_not_import_litellm() -> None:
    code = (
        "import sys\n"
        "from reflectkit.cli.app import cli\n"
        "for args in (['--help'], ['run', '--help'], ['templates', '--help']):\n"
        "    try:\n"
        "        cli.main(args)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, done.code\n"
        "print(sorted(m for m in ('litellm', 'langgraph') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_as_a_subprocess_a_missing_key_names_the_variable() -> None:
    done = _subprocess("run", "2+2", "--model", "gpt-4o-mini")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "reflectkit: error: model 'gpt-4o-mini' needs an API key: set OPENAI_API_KEY in the "
        "environment (or pass api_key=...)"
    )


def test_as_a_subprocess_version_and_help() -> None:
    version = _subprocess("--version")
    assert version.returncode == 0
    assert "reflectkit, version" in version.stdout
    helped = _subprocess("run", "--help")
    assert helped.returncode == 0
    assert "--show-thinking" in helped.stdout


def test_a_failed_durable_run_says_how_to_resume_and_resumes(tmp_path: Path) -> None:
    saves = f"{tmp_path}/checkpoints.sqlite3"
    first = ScriptedLLM(["<output>5</output>", verdict(False, "7 - 3 is 4")])
    failed = _run("run", QUESTION, "-m", first.model, "--thread-id", "t1", "--checkpoints", saves)
    assert failed.exit_code == 1
    line = failed.stderr.strip()
    assert line.startswith("reflectkit: error: ")
    assert "\n" not in line
    assert "resume with --thread-id t1" in line
    assert "(run " in line

    second = ScriptedLLM(["<output>4</output>", verdict(True)])
    resumed = _run("run", QUESTION, "-m", second.model, "--thread-id", "t1", "--checkpoints", saves)
    assert resumed.exit_code == 0
    assert resumed.stdout.strip() == "4"
    assert len(second.requests) == 2  # the revision and its critique only


def test_a_bad_checkpoints_setting_is_one_line_and_exit_2() -> None:
    result = _run("run", QUESTION, "--thread-id", "t", "--checkpoints", "mysql://u:pw@h/db")
    assert result.exit_code == 2
    assert "unsupported checkpointer URL" in result.stderr
    assert "pw" not in result.stderr


def _stopped_run(
    signum: int, tmp_path: Path, *args: str, nohup: bool = False
) -> tuple[int, str, str]:
    """Start ``python -m reflectkit run`` on a model that never answers, send ``signum`` once
    the model has been called, and return the exit code, stdout and stderr. With ``nohup``,
    the command starts with SIGHUP ignored, as nohup starts it, and is sent a SIGHUP first,
    which must leave it running."""
    from tests.blocking_model import COMMAND, MODEL, READY_ENV_VAR

    ready = tmp_path / "ready"
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env = {**clean, READY_ENV_VAR: str(ready), "REFLECTKIT_RUN_LOG": str(tmp_path / "runs.db")}
    command = [*COMMAND, "run", QUESTION, "-m", MODEL, "--mode", "single", *args]
    ignore = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ignore,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never called its model"
            time.sleep(0.05)
        if nohup:
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert proc.poll() is None, "SIGHUP stopped a command started under nohup"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _recorded_runs(tmp_path: Path) -> list[RunSummary]:
    log = RunLog(tmp_path / "runs.db")
    try:
        return log.list()
    finally:
        log.close()


def test_sigterm_cancels_the_run_says_so_in_one_line_and_exits_143(tmp_path: Path) -> None:
    saves = str(tmp_path / "checkpoints.sqlite3")
    code, out, err = _stopped_run(
        signal.SIGTERM, tmp_path, "--thread-id", "t1", "--checkpoints", saves
    )
    assert code == 143
    assert out == ""
    assert err.strip().splitlines() == [
        "reflectkit: error: stopped by SIGTERM: the run was cancelled (resume with --thread-id t1)"
    ]
    [run] = _recorded_runs(tmp_path)
    assert (run.status, run.error_type) == ("failed", "CancelledError")  # not left "running"

    model = ScriptedLLM(["<output>4</output>"])
    resumed = _run(
        *("run", QUESTION, "-m", model.model, "--mode", "single"),
        *("--thread-id", "t1", "--checkpoints", saves),
    )
    assert (resumed.exit_code, resumed.stdout) == (0, "4\n"), resumed.stderr
    assert len(model.requests) == 1


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_stops_a_run_with_one_line_and_exits_129(tmp_path: Path) -> None:
    code, out, err = _stopped_run(signal.SIGHUP, tmp_path)
    assert code == 129
    assert out == ""
    assert err.strip().splitlines() == [
        "reflectkit: error: stopped by SIGHUP: the run was cancelled"
    ]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_under_nohup_a_hangup_leaves_the_run_going(tmp_path: Path) -> None:
    """``nohup reflectkit batch ...`` asks for SIGHUP to be ignored; the command used to put
    its own handler over that and die when the terminal closed."""
    code, _, err = _stopped_run(signal.SIGTERM, tmp_path, nohup=True)
    assert code == 143
    assert err.strip().splitlines()[-1].startswith("reflectkit: error: stopped by SIGTERM")


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is signal.SIG_IGN, reason="SIGINT is ignored here"
)
def test_ctrl_c_stops_a_run_with_one_line_and_exits_130(tmp_path: Path) -> None:
    code, out, err = _stopped_run(signal.SIGINT, tmp_path, "--thread-id", "t2")
    assert code == 130
    assert out == ""
    assert err.strip().splitlines() == [
        "reflectkit: error: interrupted: the run was cancelled (resume with --thread-id t2)"
    ]


def test_a_native_crash_in_the_cli_prints_a_traceback() -> None:
    code = (
        "import ctypes, sys\n"
        "from reflectkit.cli import app as cli\n"
        "@cli.cli.command()\n"
        "def crash() -> None:\n"
        "    ctypes.string_at(0)  # reads address 0: a segmentation fault\n"
        "sys.argv = ['reflectkit', 'crash']\n"
        "cli.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert "in crash" in done.stderr


def test_importing_reflectkit_changes_no_crash_or_signal_handling() -> None:
    code = (
        "import faulthandler, signal\n"
        "import reflectkit, reflectkit.cli.app\n"
        "print(faulthandler.is_enabled(), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == ["False", "True"]


def test_batch_runs_every_line_of_a_prompts_file(tmp_path: Path) -> None:
    fake = FunctionLLM(lambda request: f"<output>{request.last_user_text.upper()}</output>")
    source = tmp_path / "prompts.jsonl"
    lines = ['"one"', "", '[{"role": "user", "content": "two"}]', '{"prompt": "three"}',
             '{"messages": [{"role": "user", "content": "four"}]}']  # fmt: skip
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _run("batch", str(source), "-m", fake.model, "--mode", "single", "--no-progress",
                  env={"REFLECTKIT_RUN_LOG": "off"})  # fmt: skip
    assert result.exit_code == 0
    out = tmp_path / "prompts.results.jsonl"
    records = sorted((json.loads(line) for line in out.read_text().splitlines()),
                     key=lambda r: r["index"])  # fmt: skip
    assert [r["result"]["output"] for r in records] == ["ONE", "TWO", "THREE", "FOUR"]
    assert result.stderr == f"4 prompt(s) in {out}: 0 kept from before, 0 failed\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "prompts.jsonl:1: not JSON"),
        ("42", 'prompts.jsonl:1: expected a string, a list of messages, or {"prompt": ...}'),
    ],
)
def test_batch_refuses_a_line_that_is_no_prompt_in_one_line(
    tmp_path: Path, line: str, message: str
) -> None:
    source = tmp_path / "prompts.jsonl"
    source.write_text(line + "\n", encoding="utf-8")
    result = _run("batch", str(source), "-m", "x/y", "--no-progress")
    assert result.exit_code == 2
    assert result.stderr.startswith("reflectkit: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
