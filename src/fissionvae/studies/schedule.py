"""A two-core job scheduler for studies: keep both cores busy where one job cannot.

A study is a list of :class:`Job` s (train a run, evaluate a cell) with dependencies (an
evaluation waits for its run's training). A job that uses every core by itself (a federated run
with the engine's worker pool) runs in this process, on a thread of its own. A job that uses one
core (a centralised run, an evaluation) runs in a pool of ``cores`` single-threaded worker
processes, so two of them run side by side: two centralised runs, or an evaluation beside a
training run.

Jobs are started in list order as soon as their dependencies are done and a core is free. An
all-core job starts as soon as one core is free: it shares the CPU with the one-core jobs still
running until they end (the CPU stays busy; waiting for the pool to drain left a core idle for
as long as the last evaluation took, up to 40 minutes per federated run at the paper's scale),
and no new job starts until it is done, so it is never overtaken. Each one-core job runs with
one torch thread whether it runs beside another or alone (``cores=1`` runs everything one after
another, an all-core job only once nothing else runs), so a scheduled study gives the same
numbers, bit for bit, as a serial one; only wall times depend on what ran alongside.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
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
    When a job raises, no new job starts, the failure is printed to stderr at once (a training
    run beside it may take another hour), the jobs already running finish and go through
    ``on_done`` as usual, and then the first exception is raised here.
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
    failure: BaseException | None = None
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cores, mp_context=context) as pool, ThreadPoolExecutor(1) as here:
        while waiting or running:
            for job in [j for j in waiting if any(a in dropped for a in j.after)]:
                waiting.remove(job)
                dropped.add(job.key)
            if failure is None:
                _start_ready(waiting, running, done, pool, here, run, cores)
            if not running:
                if failure is not None:
                    break
                if waiting:  # nothing runs and nothing can start: a dependency that is not in the list
                    raise ValueError(f"job {waiting[0].key} waits for {waiting[0].after}, which never run")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                error = future.exception()
                if error is not None:
                    dropped.add(job.key)
                    if failure is None:
                        failure = error
                        print(
                            f"job {job.key} failed: {error}; no new job starts, {len(running)} running finish first",
                            file=sys.stderr,
                            flush=True,
                        )
                    continue
                ran.append(job.key)
                (done if on_done(job, future.result()) else dropped).add(job.key)
    if failure is not None:
        raise failure
    return ran


def _start_ready(
    waiting: list[Job],
    running: dict[Future, Job],
    done: set[str],
    pool: Executor,
    here: Executor,
    run: Callable[[Any], Any],
    cores: int,
) -> None:
    """Start the ready jobs, in list order, while a core is free and no all-core job runs.

    ``pool`` runs one-core jobs in single-threaded workers, ``here`` an all-core job on a thread of
    this process (with ``cores == 1`` too: one job at a time either way).
    """
    for job in list(waiting):
        if len(running) >= cores or any(j.cores > 1 for j in running.values()):
            return
        if not all(a in done for a in job.after):
            continue
        waiting.remove(job)
        if job.cores > 1:
            running[here.submit(run, job.payload)] = job
        else:
            running[pool.submit(_single_threaded, run, job.payload)] = job
