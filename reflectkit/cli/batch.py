"""``reflectkit batch``: run the loop on every prompt of a JSONL file, in this process or on Ray.

The command is :func:`reflectkit.batch` with ``output=``: the same JSONL results, the same
resume, the same progress bar. Only click is imported here at start-up; reflectkit's loop loads
when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click

from reflectkit.cli.options import (
    concurrency_option,
    critic_model_option,
    litellm_option,
    max_iterations_option,
    mode_option,
    model_option,
    no_progress_option,
    on_critic_error_option,
    ray_arguments,
    ray_options,
    template_dir_option,
)
from reflectkit.cli.support import CONTEXT_SETTINGS, BadInput, option_value

__all__ = ["batch_command", "read_prompts"]


def _prompt_of(value: Any) -> Any:
    """The prompt a line holds: a string, a list of messages, or an object's ``prompt`` (a
    batch's own result lines have one) or ``messages``; None if it holds none."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value:
        return value
    if isinstance(value, dict):
        for key in ("prompt", "messages"):
            if key in value:
                return _prompt_of(value[key])
    return None


def read_prompts(path: str) -> list[Any]:
    """The prompts of a JSONL file, one per line in file order: a JSON string, a list of
    OpenAI-style messages, or an object with ``prompt`` or ``messages`` (so a batch's output
    file is an input too). Blank lines are skipped; any other line is a one-line error."""
    prompts: list[Any] = []
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    prompt = _prompt_of(json.loads(line))
                except ValueError as error:
                    raise BadInput(f"{path}:{number}: not JSON ({error})") from None
                if prompt is None:
                    raise BadInput(
                        f'{path}:{number}: expected a string, a list of messages, or {{"prompt": '
                        "...}"
                    )
                prompts.append(prompt)
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read {path}: {error}") from None
    return prompts


@click.command("batch", context_settings=CONTEXT_SETTINGS)
@click.argument("prompts_file", metavar="PROMPTS.jsonl", type=click.Path(dir_okay=False))
@model_option("LiteLLM model string, e.g. gpt-4o-mini or ollama/llama3.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="JSONL of the results, one line per prompt as it finishes (replaced unless --resume) "
    "[default: PROMPTS's name + .results.jsonl].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the prompts OUTPUT already has a result for; run the failed and missing ones.",
)
@concurrency_option("-c", 8, "Prompts run at the same time (per Ray actor with --ray).")
@mode_option("loop: critique and revise; single: one call.")
@max_iterations_option("Most drafts per prompt.")
@critic_model_option("Model of the LLM critic (default: the same model).")
@on_critic_error_option(
    "A critic that fails: raise fails that prompt (it goes to the failures); keep_best ends it "
    "with its best draft so far (stop reason critic_error)."
)
@template_dir_option()
@litellm_option("Passed to LiteLLM, e.g. --option temperature=0", short=False)
@no_progress_option("Do not show a progress bar.")
@ray_options("the prompts")
def batch_command(
    prompts_file: str,
    output: str | None,
    resume: bool,
    no_progress: bool,
    ray: str | None,
    ray_actors: int | None,
    concurrency: int,
    model: str | None,
    mode: str,
    max_iterations: int,
    critic_model: str | None,
    on_critic_error: str,
    template_dir: str | None,
    options: tuple[str, ...],
) -> int:
    """Run the reflection loop on every prompt of a JSONL file; write results as they finish.

    Each line is a prompt: a JSON string, a list of messages, or {"prompt": ...}. Results go to
    OUTPUT as they finish, one JSON line each (docs/batch.md); run again with --resume to keep
    them and retry the failures. Exits 1 when some prompts failed (the others are written).
    Put a bare --ray last: it takes the next word as its address.
    """
    from reflectkit.batching import batch
    from reflectkit.config import Mode, OnCriticError

    prompts = read_prompts(prompts_file)
    source = Path(prompts_file)
    target = output or str(source.with_name(source.stem + ".results.jsonl"))
    settings = dict(option_value(o) for o in options)
    if critic_model:
        settings["critic_model"] = critic_model
    items = batch(
        prompts,
        model,
        concurrency=concurrency,
        output=target,
        resume=resume,
        progress=not no_progress,
        **ray_arguments(ray, ray_actors),
        mode=cast(Mode, mode),  # click.Choice admits only the three modes
        max_iterations=max_iterations,
        on_critic_error=cast(OnCriticError, on_critic_error),  # click.Choice: the two values
        template_dir=template_dir,
        **settings,
    )
    failed = sum(1 for item in items if not item.ok)
    resumed = sum(1 for item in items if item.resumed)
    click.echo(
        f"{len(items)} prompt(s) in {target}: {resumed} kept from before, {failed} failed",
        err=True,
    )
    return 1 if failed else 0
