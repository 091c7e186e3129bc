"""A pool of long-lived Ray actors, each holding one worker object (a loaded propagator), fed volume by volume.

`--ray local` starts a Ray instance on this machine; `--ray auto` or `--ray HOST:PORT` joins a cluster
started with `ray start --head` (docs/batch.md). Each actor holds one worker built once (`RowRunner`,
`CaseEvaluator`); a group of items (every row of one image, one evaluation case) goes to one actor, so
its feature cache serves them all, and an idle actor takes the next group. Results stream back as they
complete. An actor that dies fails its items with a `WorkerLost` and the others go on.
Ray is imported here only, when a pool is opened.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

from sam2med.errors import InputError

logger = logging.getLogger(__name__)

LOCAL = "local"
T = TypeVar("T")


class WorkerLost(Exception):
    """The Ray actor running an item died (out of memory, node lost, killed) before the item finished."""


class _Actor:
    """What runs inside each Ray actor: the run's thread count set, then the worker built once and called per item."""

    def __init__(self, threads: int, log_level: int, worker_class: type, args: tuple, kwargs: dict):
        from sam2med.engine.threads import set_compute_threads

        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        set_compute_threads(threads)  # the driver's count, not this actor's CPU share: the same sums as the local run
        self.worker = worker_class(*args, **kwargs)

    def ready(self) -> dict:
        """Where this actor runs, which sam2med it imported (the driver's, through PYTHONPATH, on one machine) and the
        torch threads it computes with."""
        import torch

        import sam2med

        return {"host": socket.gethostname(), "pid": os.getpid(), "sam2med": sam2med.__file__,
                "threads": torch.get_num_threads(), **getattr(self.worker, "describe", dict)()}

    def call(self, method: str, item):
        return getattr(self.worker, method)(item)


def _runtime_env() -> dict:
    """Workers import this sam2med first: the folder holding the package goes first on their PYTHONPATH
    (on other machines it must be the same path on shared storage, or sam2med installed there)."""
    import sam2med

    lib = str(Path(sam2med.__file__).resolve().parents[1])
    paths = [lib] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != lib]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


class RayPool:
    """`with RayPool(address, workers, threads, WorkerClass, *args) as pool: for item, result in pool.stream(groups, "run")`.

    Every actor computes with `threads` CPU threads, the count the local run uses (`engine.threads`): the same
    count gives the same results to the bit, a CPU share would not."""

    def __init__(self, address: str, workers: int | None, threads: int, worker_class: type, *args, **kwargs):
        self.address, self.workers, self.threads = address, workers, threads
        self.worker_class, self.args, self.kwargs = worker_class, args, kwargs
        self.actors: list = []
        self.info: list[dict] = []  # each actor's `ready()` answer
        self._ray = None

    def __enter__(self) -> "RayPool":
        try:
            self._connect()
            self._start_actors()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        import ray

        self._ray = ray
        options = {"include_dashboard": False, "logging_level": logging.WARNING, "runtime_env": _runtime_env()}
        _check_reachable(self.address)
        try:
            if self.address == LOCAL:
                ray.init(num_cpus=os.cpu_count() or 1, **options)
            else:
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise InputError(f"cannot join the Ray cluster at {self.address!r} ({str(err).splitlines()[0][:160]}); "
                             "start one with 'ray start --head', or use --ray local") from None

    def _actor_options(self) -> tuple[int, dict]:
        """(workers, actor resources): one GPU each when the cluster has GPUs, else a share of the CPUs."""
        resources = self._ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        workers = self.workers or max(gpus, 1)
        if gpus:
            if workers > gpus:
                logger.warning("%d workers asked for, the cluster has %d GPU(s): %d workers", workers, gpus, gpus)
                workers = gpus
            return workers, {"num_gpus": 1, "num_cpus": 1}
        share = cpus / workers
        if workers * self.threads > cpus:
            logger.info("%d workers x %d threads (--threads) on %g CPU(s): the workers share cores, which is slower "
                           "but gives the results of a local run with --threads %d; --threads 1 uses the cores best",
                           workers, self.threads, cpus, self.threads)
        return workers, {"num_cpus": math.floor(share) if share >= 1 else share}

    def _start_actors(self) -> None:
        ray = self._ray
        workers, resources = self._actor_options()
        threads = self.threads
        remote = ray.remote(_Actor).options(**resources)
        level = logging.getLogger().getEffectiveLevel()
        worker_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        self.actors = [remote.remote(threads, worker_level, self.worker_class, self.args, self.kwargs) for _ in range(workers)]
        answers, failure = [], ""
        for actor in self.actors:
            try:
                answers.append(ray.get(actor.ready.remote()))
            except ray.exceptions.RayActorError as err:
                answers.append(None)
                failure = _cause(err)
                logger.error("a Ray worker could not start: %s", failure)
        started = [(a, info) for a, info in zip(self.actors, answers) if info is not None]
        if not started:
            raise InputError(f"no Ray worker could start ({failure})")
        self.actors, self.info = [a for a, _ in started], [info for _, info in started]
        logger.info("Ray: %d worker(s) (%s, %d torch thread(s) each) on %s, running sam2med from %s", len(self.actors),
                    "1 GPU" if "num_gpus" in resources else f"{resources['num_cpus']} CPU", threads,
                    ", ".join(sorted({i["host"] for i in self.info})), ", ".join(sorted({i["sam2med"] for i in self.info})))

    def stream(self, groups: Sequence[Sequence[T]], method: str) -> Iterator[tuple[T, object]]:
        """(item, worker.method(item) or a `WorkerLost`) as items complete; a group's items run on one actor, in order."""
        ray = self._ray
        queue = deque(list(g) for g in groups if g)
        pending: dict = {}  # object ref -> (actor index, item)
        busy = [0] * len(self.actors)
        alive = set(range(len(self.actors)))

        def feed() -> None:
            for index in sorted(alive):
                if busy[index] == 0 and queue:
                    for item in queue.popleft():
                        pending[self.actors[index].call.remote(method, item)] = (index, item)
                        busy[index] += 1

        feed()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, item = pending.pop(ref)
            busy[index] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                alive.discard(index)
                result = WorkerLost(f"the Ray worker died ({_cause(err)})")
            except ray.exceptions.RayTaskError as err:
                result = WorkerLost(f"the Ray worker failed ({_cause(err)})")
            yield item, result
            feed()
            if not alive:
                for group in queue:
                    for item in group:
                        yield item, WorkerLost("no Ray worker is left")
                queue.clear()

    def close(self) -> None:
        """Kill the actors (a running item is abandoned; its output was never written) and leave Ray."""
        ray = self._ray
        if ray is None:
            return
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        self.actors = []
        ray.shutdown()  # stops the instance `--ray local` started; for a cluster, only disconnects this driver
        self._ray = None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that does not answer fails now with one line (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise InputError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); start its head with "
                         "'ray start --head --port=6379' there, or use --ray local") from None


def _cause(err: BaseException) -> str:
    """The first meaningful line of a Ray error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "error" in line) and not line.startswith(("File ", "Traceback")):
            return line[:200]
    return (lines[0] if lines else type(err).__name__)[:200]
