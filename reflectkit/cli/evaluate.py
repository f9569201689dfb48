"""``reflectkit eval``: run a dataset through several modes and report the figures.

Only click is imported here at start-up: LiteLLM, LangGraph and matplotlib load when the
command runs, so ``reflectkit --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from reflectkit.cli.options import (
    concurrency_option,
    critic_model_option,
    json_option,
    litellm_option,
    max_iterations_option,
    model_option,
    no_progress_option,
    on_critic_error_option,
    ray_arguments,
    ray_options,
)
from reflectkit.cli.support import CONTEXT_SETTINGS, BadInput, option_value

__all__ = ["eval_command"]


@click.command("eval", context_settings=CONTEXT_SETTINGS)
@click.argument("dataset")
@model_option("LiteLLM model string, e.g. gpt-4o-mini or local/smollm2-135m.")
@click.option(
    "--modes",
    default="single,loop,verifier",
    show_default=True,
    help="Comma-separated: single, loop (self-critique), verifier (the dataset's checker as the "
    "critic), auto, best_of_n (N samples, the critic picks), self_consistency (N samples, "
    "majority vote).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    help="N of best_of_n and self_consistency (default: matched to the loop's cost in this run).",
)
@click.option(
    "--match-cost",
    type=click.Choice(["calls", "tokens"]),
    default="calls",
    show_default=True,
    help="What N matches without --samples: the loop's mean calls per example, or its mean "
    "tokens over single's.",
)
@click.option(
    "--sample-temperature",
    type=click.FloatRange(min=0),
    default=0.7,
    show_default=True,
    help="Temperature of the baselines' samples.",
)
@click.option(
    "--limit", type=click.IntRange(min=0), default=0, help="Only the first N examples (0: all)."
)
@concurrency_option("-c", 8, "Examples run at the same time.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Write report.md, report.json, report.png and each mode's results (<mode>.jsonl) here.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted evaluation in --output-dir: examples already answered are kept.",
)
@click.option(
    "--verifier",
    metavar="MODULE:FUNCTION|FILE.py",
    help="A function verify(example, answer) -> bool | str that decides instead of the matchers.",
)
@click.option(
    "--match",
    type=click.Choice(["exact", "numeric", "regex", "contains"]),
    help="Matcher for rows that name none (default: numeric for number answers, else exact).",
)
@max_iterations_option("Most drafts per example in the loop modes.")
@critic_model_option("Model of the loop mode's LLM critic (default: the same).")
@on_critic_error_option(
    "A critic that fails: raise makes that example a failure; keep_best scores its best draft "
    "so far (stop reason critic_error)."
)
@litellm_option("Passed to LiteLLM, e.g. -o temperature=0 -o max_tokens=256.")
@json_option("Print the report as JSON, not Markdown.")
@no_progress_option("No progress bars on stderr.")
@ray_options("each mode's examples")
def eval_command(
    dataset: str,
    model: str | None,
    modes: str,
    samples: int | None,
    match_cost: str,
    sample_temperature: float,
    limit: int,
    concurrency: int,
    output_dir: str | None,
    resume: bool,
    verifier: str | None,
    match: str | None,
    max_iterations: int,
    critic_model: str | None,
    on_critic_error: str,
    options: tuple[str, ...],
    as_json: bool,
    no_progress: bool,
    ray: str | None,
    ray_actors: int | None,
) -> None:
    """Evaluate a model on DATASET (a JSONL file, or arithmetic or humaneval) in several modes.

    Prints a Markdown table per mode: accuracy, tokens, cost, calls, latency and failures;
    then each mode against loop (or single): accuracy with a 95 % bootstrap CI, the paired
    difference with its CI, McNemar's p, and a sentence saying whether loop beat it.
    """
    from reflectkit.errors import ConfigurationError, ReflectkitError
    from reflectkit.evaluation.catalog import load_dataset
    from reflectkit.evaluation.run import evaluate

    settings = dict(option_value(o) for o in options)
    if critic_model:
        settings["critic_model"] = critic_model
    if on_critic_error != "raise":  # the default: a report's settings name only what was asked
        settings["on_critic_error"] = on_critic_error
    try:
        data = load_dataset(dataset, limit=limit or None, verifier=verifier, match=match)
        report = evaluate(
            data,
            model,
            modes=modes.split(","),
            concurrency=concurrency,
            output_dir=output_dir,
            resume=resume,
            progress=not no_progress,
            max_iterations=max_iterations,
            samples=samples,
            match_cost=match_cost,
            sample_temperature=sample_temperature,
            **ray_arguments(ray, ray_actors),
            **settings,
        )
    except ConfigurationError as error:
        raise BadInput(str(error).strip().splitlines()[0]) from None
    except ReflectkitError as error:
        raise click.ClickException(str(error).strip().splitlines()[0]) from None
    click.echo(report.to_json() if as_json else report.to_markdown(), nl=False)
    if as_json:
        click.echo()
    if output_dir:
        click.echo(f"report written to {output_dir}/report.{{md,json,png}} and cost.png", err=True)
    sys.stdout.flush()
