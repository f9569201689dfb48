"""Batch calls/s in this process against Ray with 1 and 2 actors, side by side in one run.

``--prompts`` prompts (300) each run reflectkit's 3-call loop (generate, an LLM critique that
asks for a revision, a revision that repeats the answer, so the run stops on ``no_change``)
against the OpenAI-compatible responder of benchmarks/slow_openai_server.py, in a process of its
own, answering after ``--latency`` seconds (10 ms): cheap enough that the cores go to the
clients. Calls go through LiteLLM's ``openai/`` provider with ``api_base`` pointing at it.

The same batch runs three ways: in this process (``concurrency`` prompts at a time), and with
``ray=True`` on a local cluster of ``--cpus`` CPUs (2) with 1 and with 2 actors (``concurrency``
prompts at a time each). Every item is checked to have made exactly 3 calls. Printed per way:

- ``wall``: the whole ``batch()`` call, actors' start included;
- ``start``: until the first item came back (for Ray: placing the actors and building a
  Reflector in each, which a long batch pays once);
- ``calls/s``: the steady rate, from the first item back to the last;
- ``efficiency``: the steady rate ÷ (actors × the 1-actor rate): how well actors add up;
- ``CPU ms/item here``: this process's CPU per item (on Ray: the driver's share).

Last, jobs that do nothing go through the same Ray path (2 actors, 10 × ``--prompts`` jobs): the
jobs/s and the driver's CPU per job are the ceiling one driver puts on any cluster.

The cluster's own start (``ray.init``) is timed and printed apart: a long-lived cluster
(``ray start --head``) pays it once, not per batch.

Run from the repository root (about a minute)::

    python benchmarks/ray_batch.py
    python benchmarks/ray_batch.py --prompts 1000 --cpus 4
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reflectkit as rk
from reflectkit.batching import BatchItem, batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_throughput import CALLS_PER_ITEM, MODEL, question, settings, start_server


@dataclass
class Figures:
    way: str
    actors: int
    wall: float
    start: float
    rate: float
    cpu_ms: float
    """This process's CPU time per item, in ms: for Ray, the driver's share of the work."""


def run(prompts: list[str], options: dict[str, Any], way: str, actors: int) -> Figures:
    """One batch; the steady rate is measured between the first and the last item back."""
    done: list[float] = []

    def arrived(item: BatchItem) -> None:
        done.append(time.perf_counter())

    ray: dict[str, Any] = {} if way == "in-process" else {"ray": True, "ray_actors": actors}
    began, cpu = time.perf_counter(), time.process_time()
    items = batch(prompts, MODEL, progress=False, run_log=False, on_item=arrived, **ray,
                  **options)  # fmt: skip
    wall = time.perf_counter() - began
    cpu_ms = (time.process_time() - cpu) * 1000 / len(prompts)
    wrong = [
        i
        for i in items
        if i.result is None
        or i.result.usage.calls != CALLS_PER_ITEM
        or i.result.stop_reason is not rk.StopReason.NO_CHANGE
    ]
    if wrong:
        raise RuntimeError(f"{len(wrong)} item(s) went wrong, e.g. {wrong[0].error}")
    steady = (len(done) - 1) * CALLS_PER_ITEM / (done[-1] - done[0])
    return Figures(way, actors, wall, done[0] - began, steady, cpu_ms)


class _Echo:
    """A worker that does nothing: what is left of a job's time is Ray's and the driver's."""

    async def __call__(self, job: int) -> int:
        return job

    def close(self) -> None:
        pass


def _echo() -> _Echo:
    return _Echo()


def round_trips(jobs: int, actors: int, concurrency: int) -> tuple[float, float]:
    """Jobs/s through :func:`~reflectkit.ray_pool.run_on_ray` with workers that do nothing, and
    the driver's CPU ms per job: the ceiling one driver puts on any run."""
    import asyncio

    from reflectkit.ray_pool import run_on_ray

    times: list[float] = []

    async def done(job: int, outcome: int) -> None:
        times.append(time.perf_counter())

    cpu = time.process_time()
    asyncio.run(run_on_ray(range(jobs), _echo, done, address="", actors=actors,
                           concurrency=concurrency))  # fmt: skip
    cpu_ms = (time.process_time() - cpu) * 1000 / jobs
    return (len(times) - 1) / (times[-1] - times[0]), cpu_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.01, help="the responder's delay (s)")
    parser.add_argument("--concurrency", type=int, default=32, help="prompts at once per worker")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args(argv)

    import ray

    server, api_base = start_server(args.latency)
    try:
        options = {**settings(api_base), "concurrency": args.concurrency}
        prompts = [question(i) for i in range(args.prompts)]
        run(prompts[:20], options, "in-process", 1)  # warm: LiteLLM loaded, connections open
        began = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        cluster = time.perf_counter() - began
        rows = [
            run(prompts, options, "in-process", 1),
            run(prompts, options, "ray", 1),
            run(prompts, options, "ray", 2),
        ]
        trips, trip_cpu = round_trips(args.prompts * 10, 2, args.concurrency)
    finally:
        server.kill()
        ray.shutdown()
    one = next(r.rate for r in rows if r.way == "ray" and r.actors == 1)
    calls = args.prompts * CALLS_PER_ITEM
    print(f"{args.prompts} prompts × {CALLS_PER_ITEM} calls = {calls} calls; responder latency "
          f"{args.latency * 1000:.0f} ms; concurrency {args.concurrency} per worker; "
          f"ray.init(num_cpus={args.cpus}) took {cluster:.1f} s")  # fmt: skip
    print(f"{'way':<12}{'actors':>7}{'wall s':>9}{'start s':>9}{'calls/s':>10}{'efficiency':>12}"
          f"{'CPU ms/item here':>18}")  # fmt: skip
    for r in rows:
        efficiency = f"{r.rate / (r.actors * one):.0%}" if r.way == "ray" else "-"
        print(f"{r.way:<12}{r.actors:>7}{r.wall:>9.2f}{r.start:>9.2f}{r.rate:>10.0f}"
              f"{efficiency:>12}{r.cpu_ms:>18.2f}")  # fmt: skip
    print(f"Ray round trips with workers that do nothing (2 actors, {args.prompts * 10} jobs): "
          f"{trips:.0f} jobs/s, {trip_cpu:.2f} ms of the driver's CPU per job")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
