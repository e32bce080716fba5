"""A two-core job scheduler for studies: keep both cores busy where one job cannot.

A study is a list of :class:`Job` s (train a run, evaluate a cell) with dependencies (an
evaluation waits for its run's training). A job that uses every core by itself (a federated run
with the engine's worker pool) runs alone, in this process. A job that uses one core (a
centralised run, an evaluation) runs in a pool of ``cores`` single-threaded worker processes, so
two of them run side by side: two centralised runs, or an evaluation beside a training run.

Jobs are started in list order as soon as their dependencies are done and enough cores are free;
a job that needs every core waits until the pool is idle (it is never overtaken for long: while
it waits, no new job starts). Each one-core job runs with one torch thread whether it runs
beside another or alone (``cores=1`` runs everything one after another in the same worker
process, and a job that needs every core still runs here alone), so a scheduled study gives the
same numbers, bit for bit, as a serial one.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """One unit of a study: ``run(payload)`` in a worker (``cores == 1``) or here (``cores > 1``)."""

    key: str
    cores: int
    payload: Any
    after: tuple[str, ...] = field(default=())


def _single_threaded(fn: Callable[[Any], Any], payload: Any) -> Any:
    import torch

    torch.set_num_threads(1)
    return fn(payload)


def run_jobs(
    jobs: list[Job],
    run: Callable[[Any], Any],
    on_done: Callable[[Job, Any], bool],
    cores: int = 2,
) -> list[str]:
    """Run ``jobs`` on ``cores`` cores; ``on_done(job, result)`` runs here after each one.

    ``run`` must be a module-level function (it is pickled to the workers). ``on_done`` returns
    False when the jobs that wait for this one must not run (e.g. a run stopped before its end):
    they, and whatever waits for them, are skipped. Returns the keys of the jobs that ran.
    An exception in a job is raised here once the jobs already running have finished.
    """
    if cores < 1:
        raise ValueError(f"--jobs {cores}: must be >= 1")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique")
    waiting, ran = list(jobs), []
    done: set[str] = set()
    dropped: set[str] = set()
    running: dict[Future, Job] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cores, mp_context=context) as pool:
        while waiting or running:
            for job in [j for j in waiting if any(a in dropped for a in j.after)]:
                waiting.remove(job)
                dropped.add(job.key)
            started = _start_ready(waiting, running, done, pool, run, cores)
            if started is not None:  # a job that needs every core: run it here, alone
                waiting.remove(started)
                ran.append(started.key)
                (done if on_done(started, run(started.payload)) else dropped).add(started.key)
                continue
            if not running:
                if waiting:  # nothing runs and nothing can start: a dependency that is not in the list
                    raise ValueError(f"job {waiting[0].key} waits for {waiting[0].after}, which never run")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                ran.append(job.key)
                (done if on_done(job, future.result()) else dropped).add(job.key)
    return ran


def _start_ready(
    waiting: list[Job],
    running: dict[Future, Job],
    done: set[str],
    pool: ProcessPoolExecutor,
    run: Callable[[Any], Any],
    cores: int,
) -> Job | None:
    """Submit the ready one-core jobs that fit; return a ready all-core job once the pool is idle."""
    for job in list(waiting):
        if not all(a in done for a in job.after):
            continue
        if job.cores > 1:
            return job if not running else None  # wait for the pool to drain; start nothing new meanwhile
        if len(running) >= cores:
            return None
        waiting.remove(job)
        running[pool.submit(_single_threaded, run, job.payload)] = job
    return None
