"""``reflectkit runs``: the run log from the command line, on a real file filled through RunLog."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import reflectkit
from reflectkit.cli.app import cli
from reflectkit.events import ResultEvent, StepEvent
from reflectkit.stores.runlog import STATUSES, RunLog
from reflectkit.testing import ScriptedLLM
from tests.conftest import QUESTION, verdict

LONG_QUESTION = "How many r's are in strawberry?\nCount them one by one, " + "slowly " * 20


@dataclass(frozen=True)
class Filled:
    """A run log with a finished, a failed and a running run (oldest first)."""

    path: Path
    finished: str
    failed: str
    running: str


@pytest.fixture
async def filled(tmp_path: Path) -> Filled:
    fake = ScriptedLLM(
        [
            "<thinking>x = 7, 7 - 3 = 5</thinking><output>5</output>",
            verdict(False, "7 - 3 is 4", score=2),
            "<thinking>7 - 3 = 4</thinking><output>4</output>",
            verdict(True, score=9),
        ]
    )
    path = tmp_path / "runs.sqlite3"
    with RunLog(path) as log:
        finished = log.start(
            messages=[{"role": "user", "content": QUESTION}],
            config={"model": fake.model, "max_iterations": 3, "template_dir": None},
            model=fake.model,
            mode="loop",
        )
        with reflectkit.Reflector(model=fake.model, run_log=False) as reflector:
            async for event in reflector.astream(QUESTION):
                if isinstance(event, StepEvent):
                    log.step_event(finished, event)
                elif isinstance(event, ResultEvent):
                    log.finish(finished, event.result)
        failed = log.start(
            messages=[{"role": "user", "content": LONG_QUESTION}],
            config={},
            model="fake/other",
            mode="single",
        )
        log.fail(failed, RuntimeError("the provider refused\nwith details"))
        running = log.start(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2"},
            ],
            config={},
            model="fake/other",
            mode="loop",
            thread_id="thread-7",
        )
    return Filled(path, finished, failed, running)


def _runs(
    path: Path | None, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> Result:
    where = [] if path is None else ["--run-log", str(path)]
    return CliRunner().invoke(
        cli, ["runs", *where, *args], input=stdin, env=env, catch_exceptions=False
    )


def _error(result: Result, code: int = 2) -> str:
    """The one error line of a failed command, checked for shape."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("reflectkit: error: ")
    return lines[0]


def test_list_shows_a_table_newest_first(filled: Filled) -> None:
    result = _runs(filled.path, "list")
    assert result.exit_code == 0
    assert result.stderr == ""
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STARTED",
        "STATUS",
        "MODEL",
        "STOP",
        "TOKENS",
        "COST",
        "SECS",
        "QUESTION",
    ]
    assert len(rows) == 3
    running, failed, finished = (row.split() for row in rows)
    assert filled.running.startswith(running[0])
    assert running[3:9] == ["running", "fake/other", "-", "0", "-", "-"]
    assert running[9:] == ["2+2"]
    assert failed[3:6] == ["failed", "fake/other", "RuntimeError"]
    assert " ".join(failed[9:]).startswith("How many r's are in strawberry? Count them")
    assert rows[1].endswith("...")
    assert len(" ".join(failed[9:])) == 60
    assert finished[3] == "finished"
    assert finished[5] == "passed"
    assert int(finished[6]) > 0
    with RunLog(filled.path) as log:
        started = log.get(filled.finished).created_at
    assert " ".join(finished[1:3]) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    for row in (running, failed, finished):
        assert _runs(filled.path, "show", row[0]).exit_code == 0  # shown ids are usable


def test_list_as_json_lines_with_a_limit_and_a_status(filled: Filled) -> None:
    result = _runs(filled.path, "list", "--json")
    assert result.exit_code == 0
    with RunLog(filled.path) as log:
        expected = [summary.to_dict() for summary in log.list()]
    assert [json.loads(line) for line in result.stdout.splitlines()] == expected
    newest = _runs(filled.path, "list", "--json", "--limit", "1").stdout.splitlines()
    assert [json.loads(line)["id"] for line in newest] == [filled.running]
    failed = _runs(filled.path, "list", "--json", "--status", "failed").stdout.splitlines()
    assert [json.loads(line)["id"] for line in failed] == [filled.failed]
    everything = _runs(filled.path, "list", "--limit", "0").stdout.splitlines()
    assert len(everything) == 4  # header and three runs


def test_list_of_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "new" / "runs.sqlite3"
    result = _runs(path, "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"no runs in {path}\n"
    assert _runs(path, "list", "--json").stdout == ""
    assert _runs(path, "list", "--status", "failed").stderr == f"no failed runs in {path}\n"
    assert not path.parent.exists()


def test_the_log_comes_from_the_environment(filled: Filled) -> None:
    result = _runs(None, "list", "--json", env={"REFLECTKIT_RUN_LOG": str(filled.path)})
    assert len(result.stdout.splitlines()) == 3


def test_show_prints_a_readable_report(filled: Filled) -> None:
    result = _runs(filled.path, "show", filled.finished[:14])
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith(f"run      {filled.finished}\nstatus   finished (passed)\n")
    assert f"question\n  {QUESTION}\n" in text
    assert "config\n  model: reflectkit-test/" in text
    assert "  max_iterations: 3\n" in text
    assert "template_dir" not in text  # unset settings are left out
    steps = text.split("\nsteps\n")[1].split("\nanswer\n")[0]
    assert steps.splitlines()[0].startswith("  1. generate, draft 1 (")
    assert "     answer:\n       5\n" in steps
    assert "  2. critique, draft 1" in steps
    assert "     verdict: revise, score 2\n       7 - 3 is 4\n" in steps
    assert "  3. revise, draft 2" in steps
    assert "     verdict: pass, score 9\n     stop: passed\n" in steps
    assert "  5. finalize, draft 2\n     stop: passed" in steps
    assert text.endswith("\nanswer\n  4\n")
    assert "error" not in text.split("\nsteps\n")[1]


def test_show_a_failed_and_a_running_run(filled: Filled) -> None:
    failed = _runs(filled.path, "show", filled.failed).stdout
    assert "status   failed (RuntimeError)\n" in failed
    assert "question\n  How many r's are in strawberry?\n  Count them" in failed
    assert "steps\n  (none recorded)\n" in failed
    assert failed.endswith("\nerror\n  RuntimeError: the provider refused\nwith details\n")
    assert "\nanswer\n" not in failed
    running = _runs(filled.path, "show", filled.running).stdout
    assert "status   running\n" in running
    assert "thread   thread-7\n" in running
    assert "  (2 messages in all: --json shows them)\n" in running


def test_show_as_json_is_the_whole_record(filled: Filled) -> None:
    result = _runs(filled.path, "show", filled.finished.upper(), "--json")
    assert result.exit_code == 0
    with RunLog(filled.path) as log:
        assert json.loads(result.stdout) == log.get(filled.finished).to_dict()


def test_export_to_stdout_or_a_file(filled: Filled, tmp_path: Path) -> None:
    result = _runs(filled.path, "export")
    assert result.exit_code == 0
    assert result.stderr == ""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == [filled.finished, filled.failed, filled.running]
    assert len(lines[0]["steps"]) == 5
    target = tmp_path / "finished.jsonl"
    result = _runs(filled.path, "export", "--output", str(target), "--status", "finished")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"exported 1 run(s) to {target}\n"
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines[:1]
    assert _runs(filled.path, "export", "-o", "-", "--status", "failed").stdout.count("\n") == 1


def test_delete_one_run_with_yes_or_a_confirmation(filled: Filled) -> None:
    result = _runs(filled.path, "delete", filled.failed[:20], "--yes")
    assert result.exit_code == 0
    assert result.stderr == "deleted 1 run(s)\n"
    declined = _runs(filled.path, "delete", filled.running, stdin="n\n")
    assert declined.exit_code == 1
    assert declined.stdout == ""
    assert declined.stderr.splitlines() == [
        f"Delete run {filled.running} ('2+2')? [y/N]: n",
        "reflectkit: error: not confirmed: nothing deleted",
    ]
    no_answer = _runs(filled.path, "delete", filled.running)  # end of input
    assert no_answer.exit_code == 1
    confirmed = _runs(filled.path, "delete", filled.running, stdin="y\n")
    assert confirmed.exit_code == 0
    with RunLog(filled.path) as log:
        assert [r.id for r in log.list()] == [filled.finished]


def test_delete_all(filled: Filled) -> None:
    declined = _runs(filled.path, "delete", "--all", stdin="\n")
    assert declined.exit_code == 1
    assert f"Delete all 3 run(s) in {filled.path}? [y/N]" in declined.output
    result = _runs(filled.path, "delete", "--all", "-y")
    assert result.exit_code == 0
    assert result.stderr == "deleted 3 run(s)\n"
    again = _runs(filled.path, "delete", "--all")
    assert again.exit_code == 0
    assert again.stderr == f"no runs in {filled.path}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "zzzzzzzz"], "no run 'zzzzzzzz' in"),
        (["show", "01m"], "give at least 4 characters of a run id"),
        (["show", "{prefix}"], "is ambiguous: give more characters"),
        (["delete", "zzzzzzzz", "--yes"], "no run 'zzzzzzzz' in"),
        (["delete", "{prefix}", "--yes"], "is ambiguous"),
        (["delete"], "give a run ID or --all"),
        (["delete", "{prefix}", "--all"], "give a run ID or --all, not both"),
        (["list", "--status", "done"], "--status"),
        (["list", "--limit", "-1"], "--limit"),
        (["export", "-o", "/no/such/dir/out.jsonl"], "cannot write /no/such/dir/out.jsonl"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    filled: Filled, args: list[str], message: str
) -> None:
    prefix = _common_prefix(filled.finished, filled.failed, filled.running)
    if len(prefix) < 4:
        pytest.skip("the runs straddle a change in the ids' first 4 characters")
    args = [arg.replace("{prefix}", prefix) for arg in args]
    assert message in _error(_runs(filled.path, *args))
    with RunLog(filled.path) as log:
        assert log.count() == 3


def _common_prefix(*ids: str) -> str:
    length = 0
    while length < min(map(len, ids)) and len({i[length] for i in ids}) == 1:
        length += 1
    return ids[0][:length]


def test_a_log_that_is_off_or_corrupt_is_an_error(tmp_path: Path) -> None:
    line = _error(_runs(None, "list", env={"REFLECTKIT_RUN_LOG": "off"}))
    assert line == (
        "reflectkit: error: the run log is off ($REFLECTKIT_RUN_LOG=off): give --run-log PATH"
    )
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    line = _error(_runs(garbage, "list"))
    assert f"run log {garbage}:" in line
    assert "not a database" in line
    with_off = _runs(tmp_path / "given.sqlite3", "list", env={"REFLECTKIT_RUN_LOG": "off"})
    assert with_off.exit_code == 0  # --run-log wins over the environment


def test_the_status_choices_match_the_library() -> None:
    from reflectkit.cli.runs import _STATUSES

    assert tuple(_STATUSES) == STATUSES


def test_runs_list_does_not_import_litellm(filled: Filled) -> None:
    code = (
        "import sys\n"
        "from reflectkit.cli.app import cli\n"
        "try:\n"
        f"    cli.main(['runs', '--run-log', {str(filled.path)!r}, 'list'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "print(sorted(m for m in ('litellm', 'langgraph') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "ID" in out.stdout.splitlines()[0]
