"""The ``reflectkit`` command line.

Errors print one line, ``reflectkit: error: ...``, on stderr: exit code 2 for bad input or
configuration (fix the command), 1 for a run that failed (provider down, critic raised) or a
deletion not confirmed, 3 for a ``run --human`` left waiting for a person's verdict (see
:mod:`reflectkit.cli.human`), 130 on Ctrl-C, 128 + N when signal N (SIGTERM, SIGHUP) stopped it; a
native crash prints Python's traceback (faulthandler). A run that ended exits 0 whatever its
stop reason: passed, out of iterations or budget, or a failed critic under
``--on-critic-error keep_best``. The answer goes to stdout alone;
thinking and critiques (``--show-thinking``) go to stderr, so ``reflectkit run ... >
answer.txt`` keeps just the answer. The other commands live next to it in
:mod:`reflectkit.cli` (``runs``, ``batch``, ``data``, ``evaluate``, ``serve``) and are
registered here.

Only click is imported at start-up: ``reflectkit --help`` never loads LiteLLM or LangGraph.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from reflectkit.cli.human import check_resume, judge_on_terminal, still_waiting
from reflectkit.cli.options import (
    critic_model_option,
    json_option,
    litellm_option,
    max_iterations_option,
    mode_option,
    model_option,
    on_critic_error_option,
    template_dir_option,
)
from reflectkit.cli.support import (
    CONTEXT_SETTINGS,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_RUN_FAILED,
    Stopped,
    fail,
    option_value,
    stop_on_signals,
)
from reflectkit.errors import ConfigurationError, ReflectkitError, RunError

if TYPE_CHECKING:
    from reflectkit.api import Reflector
    from reflectkit.config import Mode, OnCriticError
    from reflectkit.result import ReflectionResult

__all__ = ["cli", "main"]


class _Cli(click.Group):
    """A click group whose errors are one line with reflectkit's exit codes."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except Stopped as stop:
            if stop.signum == signal.SIGINT and sys.stderr.isatty():
                click.echo(err=True)  # end the terminal's "^C" line first, as click does
            fail(stop.line(), stop.exit_code)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.UsageError as error:
            fail(error.format_message(), EXIT_BAD_INPUT)
        except click.ClickException as error:
            fail(error.format_message(), error.exit_code)
        except RunError as error:  # first: a crashed local model is both kinds
            fail(str(error), EXIT_RUN_FAILED)
        except ConfigurationError as error:
            fail(str(error), EXIT_BAD_INPUT)
        except ReflectkitError as error:
            fail(str(error), EXIT_RUN_FAILED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        if isinstance(result, int) and result:
            sys.exit(result)
        sys.exit(0)


@click.group(cls=_Cli, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="reflectkit", prog_name="reflectkit")
def cli() -> None:
    """Make any LLM reason, check itself and correct itself before it answers."""


def _read_prompt(prompt: str) -> str:
    text = sys.stdin.read() if prompt == "-" else prompt
    if not text.strip():
        raise click.BadParameter("the prompt is empty", param_hint="PROMPT")
    return text


def _read_schema(path: str) -> dict[str, Any]:
    """The JSON Schema in the file at ``path`` (``--output-schema``)."""
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"--output-schema: cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigurationError(f"--output-schema: {path} is not JSON: {error}") from None
    if not isinstance(schema, dict):
        raise ConfigurationError(f"--output-schema: {path} must hold a JSON object")
    return schema


def _show_reasoning(result: ReflectionResult) -> None:
    for iteration in result.iterations:
        label = "draft" if iteration.kind == "generate" else "revision"
        for block in iteration.draft.thinking:
            click.secho(f"── thinking ({label} {iteration.number}) ──", err=True, dim=True)
            click.echo(block, err=True)
        for block in iteration.draft.reflections:
            click.secho(f"── reflection ({label} {iteration.number}) ──", err=True, dim=True)
            click.echo(block, err=True)
        if iteration.number != result.final_iteration:
            click.secho(f"── answer ({label} {iteration.number}) ──", err=True, dim=True)
            click.echo(iteration.draft.output, err=True)
        verdict = iteration.verdict
        if verdict is not None:
            score = f", score {verdict.score:g}" if verdict.score is not None else ""
            decision = "pass" if verdict.passed else "revise"
            click.secho(f"── critique {iteration.number}: {decision}{score} ──", err=True, dim=True)
            if verdict.feedback:
                click.echo(verdict.feedback, err=True)
        elif result.critic_error and iteration is result.iterations[-1]:
            click.secho(f"── critique {iteration.number} failed ──", err=True, dim=True)
            click.echo(result.critic_error, err=True)
    click.secho(
        f"── stop: {result.stop_reason.value} after {len(result.iterations)} draft(s), "
        f"{result.usage.calls} call(s), {result.usage.total_tokens} tokens ──",
        err=True,
        dim=True,
    )


def _with_run_ids(error: RunError) -> str:
    """The error's first line, with where to look it up and how to resume it."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    notes = [f"run {error.run_id}"] if error.run_id else []
    if error.thread_id:
        notes.append(f"resume with --thread-id {error.thread_id}")
    return f"{first} ({'; '.join(notes)})" if notes else first


CANCEL_GRACE_SECONDS = 5.0
"""How long a stopped ``run`` waits for its cancelled run to wind down (its end recorded in the
run log) before the process exits."""


def _run_or_cancel(
    reflector: Reflector, text: str | None, thread_id: str | None, verdict: str | None = None
) -> ReflectionResult:
    """``reflector.run(text)`` (or, with ``verdict``, the resume of the waiting ``thread_id``);
    stopped by a signal or Ctrl-C, the run is cancelled, given a moment to record that, and the
    stop says what became of it and how to resume it."""
    from reflectkit.runner import run_sync

    started, ended = threading.Event(), threading.Event()

    async def tracked() -> ReflectionResult:
        started.set()
        try:
            if verdict is not None and thread_id is not None:
                return await reflector.aresume(thread_id, verdict)
            return await reflector.arun(text or "", thread_id=thread_id)
        finally:
            ended.set()

    try:
        return run_sync(tracked())  # cancels the run when the wait is interrupted
    except (KeyboardInterrupt, Stopped) as error:
        if started.is_set():
            ended.wait(CANCEL_GRACE_SECONDS)
        stop = error if isinstance(error, Stopped) else Stopped(signal.SIGINT)
        resume = f" (resume with --thread-id {thread_id})" if thread_id else ""
        stop.note = f"the run was cancelled{resume}"
        raise stop from None


@cli.command()
@click.argument("prompt", required=False)
@model_option("LiteLLM model string, e.g. gpt-4o-mini or ollama/llama3.")
@critic_model_option("Model of the LLM critic (default: the same model).")
@max_iterations_option("Most drafts to write.")
@mode_option("loop: critique and revise; single: one call.")
@on_critic_error_option(
    "A critic that fails: raise fails the run; keep_best ends it with the best draft so far "
    "(stop reason critic_error, exit code 0)."
)
@click.option(
    "--show-thinking", is_flag=True, help="Print thinking, reflections and critiques to stderr."
)
@json_option("Print the whole result as JSON.")
@template_dir_option()
@litellm_option("Passed to LiteLLM, e.g. -o temperature=0 -o api_base=http://...")
@click.option(
    "--thread-id",
    help="Make the run durable: save it after every step; run again with the same id to resume "
    "a run that failed or was killed.",
)
@click.option(
    "--checkpoints",
    metavar="PATH|URL",
    help="Where durable runs are saved: a SQLite file or a postgresql:// URL "
    "(default: $REFLECTKIT_CHECKPOINTS or the user data directory).",
)
@click.option(
    "--output-schema",
    metavar="FILE",
    help="A JSON Schema file: the answer must be JSON valid for it, and is revised on the "
    "validation errors until it is.",
)
@click.option(
    "--human",
    is_flag=True,
    help="You are the critic: each draft is shown on stderr and a line of stdin judges it "
    "(pass, or what to fix). When stdin ends the run waits (exit code 3).",
)
@click.option(
    "--verdict",
    metavar="pass|TEXT",
    help="Resume the run waiting on --thread-id with this verdict (implies --human; no PROMPT).",
)
def run(
    prompt: str | None,
    model: str | None,
    critic_model: str | None,
    max_iterations: int,
    mode: str,
    on_critic_error: str,
    show_thinking: bool,
    as_json: bool,
    template_dir: str | None,
    options: tuple[str, ...],
    thread_id: str | None,
    checkpoints: str | None,
    output_schema: str | None,
    human: bool,
    verdict: str | None,
) -> None:
    """Answer PROMPT (or stdin, if PROMPT is -) after reasoning and self-correction; with
    --human, you judge each draft (--verdict resumes a run left waiting for you)."""
    check_resume(prompt, verdict, thread_id)
    model_kwargs = dict(option_value(o) for o in options)
    _prestart(model, template_dir, mode, model_kwargs)
    from reflectkit.api import Reflector
    from reflectkit.critics import HumanCritic

    text = None if prompt is None else _read_prompt(prompt)
    human = human or verdict is not None
    reflector = Reflector(
        model,
        critic=HumanCritic() if human else None,
        critic_model=critic_model,
        max_iterations=max_iterations,
        mode=cast("Mode", mode),  # click.Choice admits only the three modes
        on_critic_error=cast("OnCriticError", on_critic_error),
        template_dir=template_dir,
        checkpointer=checkpoints,
        output_type=_read_schema(output_schema) if output_schema else None,
        **model_kwargs,
    )
    try:
        result = _run_or_cancel(reflector, text, thread_id, verdict)
        if result.awaiting_human:
            result = judge_on_terminal(reflector, result)
    except RunError as error:
        fail(_with_run_ids(error), EXIT_RUN_FAILED)
    if show_thinking:
        _show_reasoning(result)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif not result.awaiting_human:
        click.echo(result.output)
    if result.awaiting_human:
        still_waiting(result)


def _prestart(
    model: str | None, template_dir: str | None, mode: str, model_kwargs: dict[str, Any]
) -> None:
    """Start the embedded model's worker (if the run is on it) and have it read the prompt's
    fixed preamble, while LangGraph imports here: a cold run then waits for the model only to
    read the question and answer it (see docs/local-model.md, "Time to first answer")."""
    from reflectkit.models.local import prestart

    if not prestart(model):
        return
    from reflectkit.config import ReflectConfig
    from reflectkit.drafting import generator_preamble
    from reflectkit.models.local.engine import DEFAULT_N_CTX

    try:
        config = ReflectConfig(
            model=model,
            template_dir=Path(template_dir) if template_dir else None,
            mode=cast("Mode", mode),
            model_kwargs=model_kwargs,
        )
        n_ctx = int(model_kwargs.get("n_ctx") or DEFAULT_N_CTX)
        prestart(model, n_ctx, generator_preamble(config))
    except (ReflectkitError, ValueError, TypeError):  # a bad setting: the run reports it
        return


@cli.command()
@click.argument("name", required=False)
@template_dir_option("Show this directory's overrides where it has them.")
def templates(name: str | None, template_dir: str | None) -> None:
    """List the prompt templates, or print template NAME."""
    from reflectkit.prompts import TEMPLATES, Prompts

    prompts = Prompts(Path(template_dir) if template_dir else None)
    if name is None:
        width = max(len(n) for n in TEMPLATES)
        for key, spec in TEMPLATES.items():
            path, _ = prompts.source(key)
            click.echo(f"{key:<{width}}  {spec.purpose}  [{path}]")
        return
    _, source = prompts.source(name)
    click.echo(source, nl=not source.endswith("\n"))


def _register_commands() -> None:
    """The other commands of :mod:`reflectkit.cli`; their modules import only click at start-up."""
    from reflectkit.cli.batch import batch_command
    from reflectkit.cli.data import export as export_command
    from reflectkit.cli.data import recycle as recycle_command
    from reflectkit.cli.evaluate import eval_command
    from reflectkit.cli.runs import runs
    from reflectkit.cli.serve import serve

    cli.add_command(runs)
    cli.add_command(batch_command)
    cli.add_command(recycle_command)
    cli.add_command(export_command)
    cli.add_command(eval_command)
    cli.add_command(serve)


_register_commands()


def main() -> None:
    """Console-script entry point (and ``python -m reflectkit``).

    Only here, never on import, does reflectkit change how the process takes crashes and
    signals: a native crash prints ``Fatal Python error`` and every thread's traceback instead
    of dying silently, and SIGTERM or SIGHUP stop the command with one line and exit 128 + N.
    """
    with contextlib.suppress(RuntimeError, ValueError):  # no usable stderr (None, no fileno)
        faulthandler.enable()
    stop_on_signals()
    cli.main(prog_name="reflectkit")
