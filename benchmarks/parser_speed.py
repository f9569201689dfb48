"""How fast the tag parser is, and that its time grows linearly with the text.

Prints MB/s for ``parse()`` on the whole text and for a ``StreamParser`` fed in 64-byte and 4 KB
chunks, on four kinds of text at two sizes. Linear time shows as MB/s that stays about the same
when the size grows four times (a quadratic parser loses 4x between the columns).

    python benchmarks/parser_speed.py                 # 1 MB and 4 MB, about a minute on 2 cores
    python benchmarks/parser_speed.py --sizes 0.25 1  # quicker
    python benchmarks/parser_speed.py --check         # exit 1 if a 4x size costs over 3x4 the time

Times are CPU seconds of this process (``time.process_time``), the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

from reflectkit.tags import StreamParser, parse

MB = 1024 * 1024


def prose(size: int) -> str:
    """A long reply in the protocol: reasoning that names its tags, a reflection, an answer."""
    step = (
        "Step {n}: the total so far is {n}, and I will check it again before I give the answer "
        "in the <output> tags; nothing here is final yet.\n"
    )
    parts = ["<thinking>\n"]
    n = 0
    while sum(map(len, parts)) < size - 200:
        n += 1
        parts.append(step.format(n=n))
        if n % 50 == 0:
            parts.append(
                "<reflection>Let me recount the last fifty steps: all correct.</reflection>\n"
            )
    parts.append("</thinking>\n<output>\nThe total is " + str(n) + ".\n</output>\n")
    return "".join(parts)[:size]


def tag_soup(size: int) -> str:
    """Tags, mentions, near-tags and text in random order (seeded): the parser's worst mix."""
    rng = random.Random(0)
    pieces = [
        "<thinking>",
        "</thinking>",
        "<reflection>",
        "</reflection>",
        "<output>",
        "</output>",
        "< Output >",
        "<out",
        "</",
        " the <output> tags",
        " close with </thinking>, then",
        " `<reflection>`",
        ' "<output>4</output>"',
        "<b>bold</b>",
        "a < b > c",
        " word",
        "\n",
        "   ",
    ]
    out: list[str] = []
    total = 0
    while total < size:
        piece = rng.choice(pieces)
        out.append(piece)
        total += len(piece)
    return "".join(out)[:size]


def angle_heavy(size: int) -> str:
    """``a<`` repeated: a "<" every other character, none a tag (the audit's worst case)."""
    return ("a<" * (size // 2 + 1))[:size]


def html(size: int) -> str:
    """An answer that is a long HTML page (the audit's 5 MB reply)."""
    row = '<tr><td class="n">{n}</td><td><a href="/item/{n}">item {n}</a></td></tr>\n'
    parts = ["<output>\n<html><body><table>\n"]
    n = 0
    while sum(map(len, parts)) < size:
        n += 1
        parts.append(row.format(n=n))
    return "".join(parts)[:size]


TEXTS: dict[str, Callable[[int], str]] = {
    "prose": prose,
    "tag soup": tag_soup,
    "<-heavy": angle_heavy,
    "html": html,
}


def whole(text: str) -> None:
    parse(text)


def streamed(chunk: int) -> Callable[[str], None]:
    def run(text: str) -> None:
        parser = StreamParser()
        for start in range(0, len(text), chunk):
            parser.feed(text[start : start + chunk])
        parser.close()

    return run


WAYS: dict[str, Callable[[str], None]] = {
    "parse()": whole,
    "stream 64 B": streamed(64),
    "stream 4 KB": streamed(4096),
}


def seconds(run: Callable[[str], None], text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run(text)
        best = min(best, time.process_time() - start)
    return max(best, 1e-9)


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", type=float, nargs=2, default=[1.0, 4.0], metavar="MB")
    options.add_argument("--repeat", type=int, default=2)
    options.add_argument("--check", action="store_true", help="exit 1 unless time is linear")
    args = options.parse_args(argv)
    small, large = (int(s * MB) for s in args.sizes)
    growth = large / small
    header = f"{'text':<10} {'way':<12} {args.sizes[0]:>6g} MB   {args.sizes[1]:>6g} MB   time x"
    print(header)
    print("-" * len(header))
    failed = []
    for name, make in TEXTS.items():
        texts = (make(small), make(large))
        for way, run in WAYS.items():
            t_small, t_large = (seconds(run, text, args.repeat) for text in texts)
            ratio = t_large / t_small
            speeds = [len(text) / MB / t for text, t in zip(texts, (t_small, t_large), strict=True)]
            print(f"{name:<10} {way:<12} {speeds[0]:6.2f} MB/s {speeds[1]:6.2f} MB/s {ratio:5.1f}")
            if ratio > 3 * growth:
                failed.append(f"{name} / {way}: {ratio:.1f}x the time for {growth:g}x the text")
    print(
        f"\nLinear time: the time grows about {growth:g}x ('time x'); quadratic would be "
        f"{growth * growth:g}x."
    )
    for failure in failed:
        print("NOT LINEAR:", failure)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
