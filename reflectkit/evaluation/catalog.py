"""Datasets by name: the built-in ``arithmetic`` and ``humaneval``, a JSONL file, or a
:class:`~reflectkit.evaluation.datasets.Dataset` as given, with a verifier or matcher applied.

It sits above both :mod:`reflectkit.evaluation.datasets` and
:mod:`reflectkit.evaluation.humaneval`, so neither imports the other's caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from reflectkit.errors import ConfigurationError
from reflectkit.evaluation.datasets import (
    Dataset,
    arithmetic,
    load_verifier,
    matcher_check,
    read_jsonl,
    wrap_verifier,
)

__all__ = ["BUILTIN_DATASETS", "load_dataset"]


def _humaneval(limit: int | None) -> Dataset:
    from reflectkit.evaluation.humaneval import humaneval

    return humaneval(limit)


BUILTIN_DATASETS: dict[str, Callable[[int | None], Dataset]] = {
    "arithmetic": lambda limit: arithmetic(n=limit or 30),
    "humaneval": _humaneval,
}
"""Datasets addressable by name, each made from a ``limit``."""


def load_dataset(
    source: str | Path | Dataset,
    *,
    limit: int | None = None,
    verifier: str | Callable[..., Any] | None = None,
    match: str | None = None,
) -> Dataset:
    """A dataset by built-in name (``arithmetic``, ``humaneval``), from a JSONL file, or as
    given; its first ``limit`` examples. ``verifier`` (a callable, or a ``--verifier`` spec)
    replaces the matchers; ``match`` is the matcher for rows that name none."""
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit must be >= 0, not {limit}")
    fn = load_verifier(verifier) if isinstance(verifier, str) else verifier
    if isinstance(source, Dataset):
        dataset = source
    elif isinstance(source, str) and source in BUILTIN_DATASETS:
        dataset = BUILTIN_DATASETS[source](limit)
    else:
        path = Path(source)
        if not path.is_file():
            names = ", ".join(BUILTIN_DATASETS)
            raise ConfigurationError(
                f"no dataset {str(source)!r}: give a JSONL file or a built-in name ({names})"
            )
        examples = read_jsonl(path, match=match, verified=fn is not None)
        dataset = Dataset(path.stem, examples, matcher_check)
    if fn is not None:
        checker = wrap_verifier(fn)
        dataset = replace(dataset, check=checker, feedback=checker)
    return dataset.head(limit)
