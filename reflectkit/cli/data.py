"""The data commands of the ``reflectkit`` command line: ``recycle`` and ``export``.

``reflectkit.cli.app`` registers them on its group (``cli.add_command(recycle)``,
``cli.add_command(export)``), whose error handling turns a ConfigurationError into one line and
exit code 2. Only click is imported here at start-up; the work is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reflectkit.cli.options import (
    concurrency_option,
    litellm_option,
    no_progress_option,
    output_option,
    ray_arguments,
    ray_options,
    template_dir_option,
)
from reflectkit.cli.support import CONTEXT_SETTINGS, option_value

__all__ = ["export", "recycle"]

_FILE = click.Path(dir_okay=False)
"""A file's path (it need not exist yet), never a folder's."""


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("source", metavar="INPUT", type=_FILE)
@click.option(
    "--oracle",
    required=True,
    metavar="MODEL",
    help="LiteLLM model string of the model that reflects and rewrites, e.g. gpt-4o.",
)
@click.option(
    "-o",
    "--output",
    type=_FILE,
    help="Alpaca JSONL to append to; records already in it are skipped "
    "[default: INPUT's name + .recycled.jsonl].",
)
@click.option(
    "--failures",
    type=_FILE,
    help="JSONL of the records that failed, replaced each run [default: OUTPUT.failures.jsonl].",
)
@click.option(
    "--stages",
    type=click.Choice(["both", "instruction", "response"]),
    default="both",
    show_default=True,
    help="Which reflections to run: instruction then response, or one of them.",
)
@concurrency_option("-j", 4, "Records in flight at once.", most=1000)
@click.option("--keep-analysis", is_flag=True, help="Keep the oracle's analyses in the output.")
@template_dir_option()
@litellm_option("Passed to LiteLLM, e.g. --option temperature=0.7", short=False)
@no_progress_option("Do not show a progress bar.")
@ray_options("the oracle's calls")
def recycle(
    source: str,
    oracle: str,
    output: str | None,
    failures: str | None,
    stages: str,
    concurrency: int,
    keep_analysis: bool,
    template_dir: str | None,
    options: tuple[str, ...],
    no_progress: bool,
    ray: str | None,
    ray_actors: int | None,
) -> int:
    """Improve instruction data with an oracle model (Reflection-Tuning data recycling).

    INPUT is Alpaca data (JSON lines, or a JSON array) with instruction, input and output. For
    each record the oracle reflects on the instruction and writes a better instruction and
    response, then reflects on that response and improves it. Records are appended to OUTPUT
    as they finish; run the command again to resume and to retry failed records. Exits 1 when
    some records failed (the others are written).
    """
    from reflectkit.data.recycle import recycle as run

    target = (
        Path(output) if output else Path(source).with_name(Path(source).stem + ".recycled.jsonl")
    )
    report = run(
        source,
        target,
        oracle=oracle,
        stages=stages,
        concurrency=concurrency,
        failures=failures,
        template_dir=template_dir,
        keep_analysis=keep_analysis,
        progress=not no_progress,
        **ray_arguments(ray, ray_actors),
        **dict(option_value(o) for o in options),
    )
    click.echo(
        f"recycled {report.written} record(s) into {report.output}; {report.skipped} already "
        f"done, {report.failed} failed",
        err=True,
    )
    if report.failed:
        click.echo(f"failures: {report.failures} (run again to retry them)", err=True)
        return 1
    return 0


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("source", metavar="[SOURCE]", required=False, type=_FILE)
@output_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openai", "sharegpt"]),
    default="openai",
    show_default=True,
    help='openai: {"messages": [...]}; sharegpt: {"conversations": [{"from", "value"}]}.',
)
@click.option("--passed-only", is_flag=True, help="Only runs whose answer the critic passed.")
@click.option(
    "--system",
    type=click.Choice(["protocol", "tuned"]),
    default="protocol",
    show_default=True,
    help="System prompt: the tag protocol's, or Reflection-70B's own.",
)
@template_dir_option()
def export(
    source: str | None,
    output: str,
    fmt: str,
    passed_only: bool,
    system: str,
    template_dir: str | None,
) -> None:
    """Turn recorded runs into fine-tuning data in the tag format (chat JSONL).

    SOURCE is a run log file, or a JSONL of run records (reflectkit runs export), batch
    results or results with their prompts; default: the run log ($REFLECTKIT_RUN_LOG, else the
    per-user file). Each finished run becomes one example whose assistant turn reasons in
    <thinking>, corrects itself in <reflection> and answers in <output>.
    """
    from reflectkit.data.export import export as run
    from reflectkit.errors import ConfigurationError
    from reflectkit.stores.runlog import ENV_VAR, default_path

    where = Path(source) if source else default_path()
    if where is None:
        raise ConfigurationError(f"the run log is off (${ENV_VAR}): give SOURCE")
    options: dict[str, Any] = {
        "format": fmt,
        "passed_only": passed_only,
        "system": system,
        "template_dir": template_dir,
    }
    if output == "-":
        with click.open_file("-", "w", encoding="utf-8") as stdout:
            report = run(where, stdout, **options)
    else:
        report = run(where, output, **options)
    skipped = ", ".join(f"{count} {why}" for why, count in sorted(report.skipped.items()))
    note = f" (skipped: {skipped})" if skipped else ""
    target = "stdout" if output == "-" else output
    click.echo(f"exported {report.written} example(s) to {target}{note}", err=True)
