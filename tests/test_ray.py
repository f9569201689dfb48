"""Batches, evaluations and recycling on a real local Ray cluster give the files the in-process
path gives: the same lines (timings aside), the same failures, the same resume.

One cluster of two CPUs serves the whole module. Its worker processes make the fakes of
tests/ray_fakes.py as they start (Ray's ``worker_process_setup_hook``), so the actors answer with
the same fake models as this process, and hosted models are blocked there too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reflectkit.batching import batch, read_batch_file
from reflectkit.cli.app import cli
from reflectkit.errors import ConfigurationError
from reflectkit.ray_pool import reason
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import FunctionLLM
from tests.ray_fakes import ECHO, ORACLE, register

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS: list[Any] = [
    "first question",
    "this one goes boom",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a chat"}],
    "fourth",
    "fifth",
    "sixth",
]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    register()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={
            "worker_process_setup_hook": "tests.ray_fakes.register",
            "env_vars": {"PYTHONPATH": path},
        },
    )
    yield
    ray.shutdown()


_UNIQUE = ("seconds", "run_id")
"""What differs between any two runs of the same prompts: timings, and run ids."""


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in _UNIQUE}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def lines(path: Path, key: str = "index") -> list[Any]:
    """A JSONL file's records without their timings, in the order of ``key`` (lines are
    written as items finish, which concurrency leaves to chance)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted((_without_timings(r) for r in records), key=lambda r: str(r[key]))


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_batch_on_ray_writes_the_file_the_in_process_batch_writes(tmp_path: Path) -> None:
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    local = batch(PROMPTS, ECHO, mode="single", output=here, progress=False, run_log=False)
    log = tmp_path / "runs.sqlite3"  # the driver's: it records what the actors ran
    remote = batch(PROMPTS, ECHO, mode="single", output=there, progress=False, run_log=log,
                   ray=True, ray_actors=2, concurrency=2)  # fmt: skip
    assert lines(there) == lines(here)
    assert [i.output for i in remote] == [i.output for i in local]
    assert remote[3].output == "FOURTH"
    assert remote[1].error is not None
    assert remote[1].error == local[1].error
    assert remote[1].error.type == "ProviderRequestError"
    with RunLog(log) as runs:
        assert runs.count("finished") == 5
        failed = runs.list(status="failed")
        first = remote[0].result
        assert first is not None
        assert first.run_id is not None
        assert runs.get(first.run_id).output == first.output
    message = remote[1].error.message
    assert [(r.error_type, r.error_message) for r in failed] == [("ProviderRequestError", message)]


def test_lesson_memory_on_ray_must_be_a_shared_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="every worker can reach"):
        batch(["q"], ECHO, mode="loop", trials=2, memory=True, progress=False, run_log=False,
              ray=True)  # fmt: skip


class _LockedCritic:
    """A critic, a callable (question, answer) -> verdict, holding a lock: it cannot be
    pickled, so it cannot go to an actor."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, question: str, answer: str) -> bool:
        raise AssertionError("never run")


def test_settings_that_cannot_go_to_the_actors_are_one_line() -> None:
    with pytest.raises(ConfigurationError, match="cannot be sent to Ray actors") as raised:
        batch(["q"], ECHO, critic=_LockedCritic(), progress=False, run_log=False, ray=True)
    assert len(str(raised.value).splitlines()) == 1


def test_a_model_the_actors_cannot_use_stops_the_batch_with_its_own_error() -> None:
    only_here = FunctionLLM(lambda request: "<output>x</output>")  # not made in the workers
    with pytest.raises(ConfigurationError, match="no fake model named") as raised:
        batch(["q"], only_here.model, mode="single", progress=False, run_log=False, ray=True,
              ray_actors=1)  # fmt: skip
    assert type(raised.value) is ConfigurationError  # Ray's wrapper is not what the caller gets


def test_the_batch_command_resumes_a_partial_file_with_and_without_ray(tmp_path: Path) -> None:
    source, whole = tmp_path / "prompts.jsonl", tmp_path / "whole.jsonl"
    rows = [json.dumps(p if i % 2 else {"prompt": p}) for i, p in enumerate(PROMPTS)]
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    common = ["batch", str(source), "-m", ECHO, "--mode", "single", "--no-progress"]
    assert run_cli(*common, "-o", str(whole)).exit_code == 1  # one prompt failed
    kept = sorted(whole.read_text().splitlines(), key=lambda r: json.loads(r)["index"])[:3]
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    for out in (here, there):
        out.write_text("\n".join(kept) + '\n{"index": 5, "ok": tr', encoding="utf-8")  # cut short
    resumed = run_cli(*common, "--resume", "-o", str(here))
    on_ray = run_cli(*common, "--resume", "-o", str(there), "--ray-actors", "1", "--ray")
    assert resumed.exit_code == on_ray.exit_code == 1
    assert on_ray.stderr.splitlines()[-1] == (
        f"6 prompt(s) in {there}: 2 kept from before, 1 failed"  # index 1 failed: it ran again
    )
    assert lines(there) == lines(here)
    latest = {k: _without_timings(v) for k, v in read_batch_file(there).items()}
    assert latest == {r["index"]: r for r in lines(whole)}
    again = batch(PROMPTS, ECHO, mode="single", output=there, resume=True, progress=False,
                  run_log=False)  # fmt: skip
    assert [i.index for i in again if not i.resumed] == [1]  # only the failure runs again


def test_eval_with_ray_writes_the_same_results(tmp_path: Path) -> None:
    data, checks = tmp_path / "d.jsonl", tmp_path / "checks.py"
    rows = [{"id": "a", "prompt": "abc", "expected": "ABC"}, {"id": "b", "prompt": "x"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # A verifier loaded from a file by its path: the workers cannot import it by name.
    checks.write_text(
        "def verify(example, answer):\n"
        "    return answer == example.data.get('expected') or 'not ' + answer\n"
    )
    common = ["eval", str(data), "-m", ECHO, "--modes", "verifier", "--verifier", str(checks),
              "--no-progress", "--json"]  # fmt: skip
    here = run_cli(*common, "--output-dir", str(tmp_path / "here"))
    there = run_cli(*common, "--output-dir", str(tmp_path / "there"), "--ray-actors", "1", "--ray")
    assert here.exit_code == there.exit_code == 0, there.output
    # The verifier mode's critic, the dataset's own checker, went to the actors and back.
    assert lines(tmp_path / "there" / "verifier.jsonl") == lines(
        tmp_path / "here" / "verifier.jsonl"
    )
    report = json.loads(there.stdout)
    assert [m["accuracy"] for m in report["modes"]] == [0.5]


def test_recycle_with_ray_writes_the_same_records_and_failures(tmp_path: Path) -> None:
    source = tmp_path / "alpaca.jsonl"
    records = [
        {"instruction": "Name a colour.", "input": "", "output": "Red."},
        {"instruction": "Make it boom.", "input": "", "output": "No."},
        {"instruction": "Add numbers.", "input": "2 and 3", "output": "5"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    common = ["recycle", str(source), "--oracle", ORACLE, "--no-progress"]
    here = run_cli(*common, "-o", str(tmp_path / "here.jsonl"))
    there = run_cli(*common, "-o", str(tmp_path / "there.jsonl"), "--ray-actors", "1", "--ray")
    assert here.exit_code == there.exit_code == 1  # a record failed, a line was unreadable
    assert lines(tmp_path / "there.jsonl", "source_sha256") == lines(
        tmp_path / "here.jsonl", "source_sha256"
    )
    assert len(lines(tmp_path / "there.jsonl", "source_sha256")) == 2
    failures = [tmp_path / f"{name}.jsonl.failures.jsonl" for name in ("here", "there")]
    assert lines(failures[1], "line") == lines(failures[0], "line")
    assert [f["error"] for f in lines(failures[1], "line")] == ["RecycleError", "InputError"]


def test_ray_settings_that_cannot_work_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="ray_actors must be"):
        batch(["q"], ECHO, ray=True, ray_actors=0, progress=False)
    with pytest.raises(ConfigurationError, match="needs ray=True"):
        batch(["q"], ECHO, ray_actors=2, progress=False)
    done = tmp_path / "done.jsonl"
    batch(["q"], ECHO, mode="single", output=done, progress=False, run_log=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'reflectkit\[ray\]'"):
        batch(["q"], ECHO, mode="single", ray=True, progress=False, run_log=False)
    # Nothing left to run: Ray is not even imported, so a resumed batch finishes anywhere.
    items = batch(["q"], ECHO, mode="single", output=done, resume=True, progress=False,
                  run_log=False, ray=True)  # fmt: skip
    assert [item.resumed for item in items] == [True]


def test_a_ray_error_report_is_told_by_the_error_it_carries() -> None:
    report = (
        "The actor died because of an error raised in its creation task, ray::_Host.__init__()\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ModuleNotFoundError: No module named 'checks'\n"
    )
    assert reason(report) == "ModuleNotFoundError: No module named 'checks'"
    assert reason("The node died.\nmore") == "The node died."


def test_an_address_nothing_answers_at_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A process of its own: this one is connected to the module's cluster already.
    source = tmp_path / "p.jsonl"
    source.write_text('"q"\n')
    command = [sys.executable, "-m", "reflectkit", "batch", str(source), "-m", ECHO,
               "--no-progress", "--ray", "127.0.0.1:9"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "reflectkit: error: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused"
    ]
