"""Many async jobs on a Ray cluster: :mod:`reflectkit.pool`'s ``run_bounded``, with the work done
by Ray actors instead of in this process.

Batches, evaluations and data recycling keep everything that makes their output what it is on
the driver (this process): reading the input, resume, the JSONL writer, the failures file, the
progress bar. Only the call that turns one job into one outcome moves: :func:`run_on_ray` starts
``actors`` Ray actors, each building its worker once (``make_worker()``: a
:class:`~reflectkit.Reflector`, an oracle client) and running up to ``concurrency`` jobs at a
time on its own event loop, and hands every outcome back to ``done`` on the driver, which
records it exactly as the in-process path does. So the files are the same whichever runs them.

``make_worker`` and the jobs travel to the actors by pickle (Ray's cloudpickle): a factory is a
small picklable object, never a live client. Outcomes travel back the same way, so a worker
returns plain data (no exception objects, which often cannot be rebuilt).

Ray is optional (``pip install 'reflectkit[ray]'``) and imported only here, when a run asks for
it; ``ray.init`` runs in a thread so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType
from typing import Any, Protocol, TypeVar, cast

from reflectkit.errors import ConfigurationError, RunError
from reflectkit.models.provider import model_requests_allowed
from reflectkit.pool import run_bounded

__all__ = ["RayWorker", "check_ray", "connect", "reason", "run_on_ray", "send_by_value"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

INSTALL = "pip install 'reflectkit[ray]'"


class RayWorker(Protocol):
    """What ``make_worker()`` builds in each actor: one job in, one picklable outcome out."""

    async def __call__(self, job: Any) -> Any: ...

    def close(self) -> None: ...


def check_ray(ray: bool | str | None, actors: int | None) -> str | None:
    """The address ``ray=`` asks for (``""``: a local cluster, or whatever this process is
    already connected to), or None for no Ray; a setting that cannot be one is a
    ConfigurationError."""
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int)):
        raise ConfigurationError(f"ray_actors must be an integer >= 1, not {actors!r}")
    if actors is not None and actors < 1:
        raise ConfigurationError(f"ray_actors must be an integer >= 1, not {actors!r}")
    if ray is None or ray is False:
        if actors is not None:
            raise ConfigurationError("ray_actors= needs ray=True or a Ray address")
        return None
    if ray is True:
        return ""
    if isinstance(ray, str) and ray.strip():
        return ray.strip()
    raise ConfigurationError(
        f"ray must be True (a local cluster) or a Ray address such as 'auto', not {ray!r}"
    )


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigurationError(f"running on Ray needs Ray: {INSTALL}") from None


def connect(address: str) -> Any:
    """The ``ray`` module, connected: to ``address`` (``"auto"``, ``"ray://host:10001"``, or
    ``""`` for a new local cluster) unless this process is connected already, in which case
    that connection is used as it is. Blocks (starting a local cluster takes seconds)."""
    ray = _import_ray()
    if ray.is_initialized():
        if address:
            logger.info("already connected to a Ray cluster: ray=%r is not used", address)
        return ray
    where = address or None
    _reachable(address)
    try:
        ray.init(address=where, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as error:
        text = str(error).strip().splitlines()
        reason = text[0] if text else type(error).__name__
        place = f"at {address}" if address else "(a new local cluster)"
        raise ConfigurationError(f"cannot reach the Ray cluster {place}: {reason}") from None
    return ray


REACH_SECONDS = 5.0
"""How long a cluster's address gets to accept a connection: Ray itself retries an address
nothing answers at for a minute or more before it gives up."""


def _reachable(address: str) -> None:
    """Fail fast, in one line, when nothing listens at ``address`` (``host:port`` or
    ``ray://host:port``); ``auto`` and a new local cluster are Ray's to find."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigurationError(f"cannot reach the Ray cluster at {address}: {reason}") from None


class _Host:
    """The actor: one worker, built once, serving jobs concurrently on the actor's event loop."""

    def __init__(self, make_worker: Callable[[], RayWorker], requests_allowed: bool) -> None:
        self._make = make_worker
        self._worker: RayWorker | None = None
        if not requests_allowed:  # the driver blocks hosted models (a test suite): so do we
            from reflectkit.models.provider import set_model_requests_allowed

            set_model_requests_allowed(False)

    async def start(self) -> None:
        # Built off the actor's loop: a Reflector compiles its graph and opens its files.
        self._worker = await asyncio.to_thread(self._make)

    async def run(self, job: Any) -> Any:
        assert self._worker is not None, "start() first"
        return await self._worker(job)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.close()


def _cause(ray: Any, error: BaseException) -> BaseException:
    """What a job's failure on an actor was: the worker's own exception when Ray carried it
    back (a ConfigurationError stays one), else one line saying what Ray reported."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
            return cause
    return RunError(f"a Ray worker failed: {reason(str(error)) or type(error).__name__}")


_RAISED = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception)\b.*")


def reason(report: str) -> str:
    """The line of a Ray error report that says what went wrong: the last ``SomeError: ...``
    line of the traceback it carries (an actor that died starting), else its first line."""
    lines = [line.strip() for line in report.strip().splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    return raised[-1] if raised else (lines[0] if lines else "")


_NO_JOB = object()

_BY_VALUE: dict[str, ModuleType] = {}


def send_by_value(module: ModuleType) -> None:
    """Have Ray send ``module``'s functions to the actors as code, not as an import: for a
    module loaded from a file by its path (an eval's ``--verifier checks.py``), which the
    workers could not import by name."""
    _BY_VALUE[module.__name__] = module


def _place(
    address: str,
    actors: int | None,
    concurrency: int,
    make_worker: Callable[[], RayWorker],
    requests_allowed: bool,
) -> tuple[Any, list[Any]]:
    """Connect and ask Ray for the actors (blocking calls: run in a thread). Each takes one
    CPU, or a fair share of the cluster's when there are more actors than CPUs."""
    ray = connect(address)
    for module in _BY_VALUE.values():
        ray.cloudpickle.register_pickle_by_value(module)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    count = actors if actors is not None else max(1, int(cpus))
    share = min(1.0, cpus / count) if cpus > 0 else 0.0
    host = ray.remote(_Host).options(max_concurrency=concurrency, num_cpus=share, max_restarts=0)
    try:
        first = host.remote(make_worker, requests_allowed)
    except Exception as error:  # Ray pickles the settings here: a live client or a lock fails
        text = str(error).strip().splitlines()
        raise ConfigurationError(
            "the settings cannot be sent to Ray actors (they must pickle: no open clients, "
            f"locks or files): {text[0] if text else type(error).__name__}"
        ) from None
    return ray, [first, *(host.remote(make_worker, requests_allowed) for _ in range(count - 1))]


async def run_on_ray(
    jobs: Iterable[T],
    make_worker: Callable[[], RayWorker],
    done: Callable[[T, Any], Awaitable[None]],
    *,
    address: str,
    actors: int | None,
    concurrency: int,
) -> None:
    """Run every job of ``jobs`` on Ray actors and await ``done(job, outcome)`` on the driver
    for each, as it finishes.

    ``actors`` actors (default: the cluster's CPUs, at least 1) each build ``make_worker()``
    once and run at most ``concurrency`` jobs at a time; a job goes to the actor with the fewest
    in flight. Each actor asks for one CPU, or a fair share when there are more actors than
    CPUs, so none waits for a CPU that will never free. The first failure (a worker raising, an
    actor dying, ``done`` raising) ends the run like :func:`~reflectkit.pool.run_bounded`'s, and
    the actors are stopped either way. With no jobs at all (everything resumed), Ray is not
    even connected to.
    """
    pending = iter(jobs)
    first = next(pending, _NO_JOB)
    if first is _NO_JOB:
        return
    jobs = itertools.chain([cast(T, first)], pending)
    allowed = model_requests_allowed()
    ray, hosts = await asyncio.to_thread(_place, address, actors, concurrency, make_worker, allowed)
    count = len(hosts)
    load = [0] * count

    async def call(ref: Any) -> Any:
        try:
            return await ref
        except ray.exceptions.RayError as error:
            raise _cause(ray, error) from None

    async def work(job: T) -> None:
        slot = min(range(count), key=load.__getitem__)
        load[slot] += 1
        try:
            outcome = await call(hosts[slot].run.remote(job))
        finally:
            load[slot] -= 1
        await done(job, outcome)

    try:
        await asyncio.gather(*(call(h.start.remote()) for h in hosts))
        logger.info("running on %d Ray actor(s), %d job(s) each at a time", count, concurrency)
        await run_bounded(jobs, work, count * concurrency)
    finally:
        await asyncio.gather(*(_stop(ray, handle) for handle in hosts))


STOP_SECONDS = 10.0
"""How long an actor gets to close its worker (flush its files) before it is killed."""


async def _stop(ray: Any, handle: Any) -> None:
    """Close the actor's worker, then end the actor (its process goes back to Ray)."""
    try:
        await asyncio.wait_for(handle.stop.remote(), STOP_SECONDS)
    except Exception as error:  # a dead or stuck actor is killed all the same
        logger.debug("stopping a Ray actor: %s", error)
    try:
        ray.kill(handle, no_restart=True)
    except Exception as error:
        logger.debug("killing a Ray actor: %s", error)
