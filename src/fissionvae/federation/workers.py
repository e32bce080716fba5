"""Clients trained in parallel worker processes: the engine's worker pool.

:class:`WorkerPool` is a dispatcher (see :mod:`.dispatch`) that trains a round's participants
in a persistent pool of processes instead of one after another in the server process.

- **Start-up, once per** :func:`~fissionvae.federation.engine.train` **call.** Workers are
  started with the ``spawn`` method (no fork of a process that has torch's thread pools
  running), each with ``federation.threads`` torch threads (default 1). Every worker gets the
  run config and every client's data once: the clients' tensors are moved into shared memory
  (``Tensor.share_memory_``, in place, no copy kept) and handed over as file descriptors, so
  the data exists once on the machine however many workers there are. Each worker builds its
  own model template from the config (``build_model``, the same ``init`` stream as the server).
- **Per client (a task).** The server sends the weights the client owns (the encoder and its
  branch, the same dict the in-process engine passes), the run-level fixed entries no client
  owns (``prior_means``), the round's :class:`LocalTrainSpec` and, in keep mode, the client's
  optimiser state, as one pickled message over a pipe (about 4.3 MB for the Mixed MNIST MLP,
  ~10 ms each way; a client's local update takes seconds). The worker runs the same
  :func:`client_update` as the in-process engine and sends back the :class:`ClientResult`.
- **Scheduling.** Tasks go to whichever worker is free (participants in client-id order);
  replies are returned in client-id order whichever worker finished first. Every random draw
  of a local update comes from the (seed, "client", round, client id) stream, and a client's
  update depends only on the weights it is sent and its data, so the weights, metrics and
  optimiser states are bit-identical to the in-process engine's for any number of workers
  (tested).
- **Failures.** An exception in a client comes back with its traceback and is raised in the
  server as :class:`WorkerError`; a worker that dies is detected from its process sentinel.
  :meth:`WorkerPool.close` (also on ``with`` exit; ``train`` calls it in ``finally``) stops
  every worker: idle ones are asked to exit, busy ones are terminated, stragglers killed, all
  reaped (and multiprocessing's resource tracker, if the pool started it). Workers ignore SIGINT (Ctrl-C reaches the server, which closes the pool) and exit
  when the server's end of their pipe closes, so none outlives the server.

:func:`resolve_workers` turns ``federation.workers`` into a process count; 0 (the default,
"auto") uses the pool only where it pays for its start-up (see there).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.multiprocessing  # registers the tensor reductions that pass shared-memory tensors to children
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.config import RunConfig
from fissionvae.data.federated import ClientData
from fissionvae.federation.client import ClientResult, LocalTrainSpec, client_update, local_images
from fissionvae.federation.replies import Reply
from fissionvae.federation.server import Federation

#: ``federation.workers: 0`` (auto) starts a pool only if one ``train`` call is expected to train
#: at least this many samples (rounds x expected participants x local images per client): below
#: it the pool's start-up (~2-4 s on this 2-core machine) eats most of what the second core saves.
AUTO_MIN_SAMPLES = 200_000

_START_TIMEOUT = 300.0  # seconds for a worker to import torch, map the data and build its model


class WorkerError(RuntimeError):
    """A client failed in a worker process, or a worker died or could not start."""


def usable_cores() -> int:
    """CPUs this process may run on (affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(
    cfg: RunConfig, client_sizes: list[int], spec: LocalTrainSpec, rounds: int, cores: int | None = None
) -> int:
    """Number of training processes for ``federation.workers``; 1 means in-process (no pool).

    ``client_sizes`` are the clients' sample counts, ``spec`` a round's training spec (local
    epochs or steps, batch size), ``rounds`` the most rounds this call will run.

    An explicit ``workers >= 1`` is used as given (capped at the number of clients). ``0``
    (auto) gives ``min(cores // threads, expected participants per round)`` workers, but only
    when the call's expected work reaches :data:`AUTO_MIN_SAMPLES` and the device is the CPU;
    otherwise 1. Centralised runs have one client, hence 1.
    """
    n_clients = len(client_sizes)
    fed = cfg.federation
    if fed.workers >= 1:
        return max(1, min(fed.workers, n_clients))
    if cfg.train.device != "cpu" or n_clients <= 1:
        return 1
    participation = 1.0 if cfg.mode == "centralized" else fed.participation
    expected = max(1, math.ceil(participation * n_clients))
    n = min((cores or usable_cores()) // max(1, fed.threads), expected)
    if n <= 1:
        return 1
    per_client = sum(local_images(s, spec) for s in client_sizes) / n_clients
    work = rounds * participation * n_clients * per_client
    return n if work >= AUTO_MIN_SAMPLES else 1


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing SpawnProcess
    conn: Connection
    client: int | None = None  # the client it is training, None when idle


def _dumps(obj: Any) -> bytes:
    # plain pickle (tensors as bytes), not multiprocessing's ForkingPickler, which would copy every
    # tensor into a new shared-memory segment per message
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class WorkerPool:
    """A persistent pool of client-training processes; call it like any dispatcher.

    Parameters
    ----------
    fed:
        The federation (config, model template, clients on the CPU). Its clients' tensors are
        moved into shared memory in place.
    workers:
        Number of processes (>= 1).
    progress:
        Show a per-round bar of finished clients.
    """

    def __init__(self, fed: Federation, workers: int, progress: bool = False):
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 process, got {workers}")
        if not fed.clients:
            raise ValueError(
                "a worker pool needs the federation's client data (Federation.from_config(..., with_clients=True))"
            )
        if any(c.images.device.type != "cpu" for c in fed.clients):
            raise ValueError(
                "the worker pool trains on the CPU; use federation.workers: 1 with train.device other than cpu"
            )
        self.progress = progress
        self.owned = [fed.owned_keys(c.client_id) for c in fed.clients]
        everyone = set().union(*map(set, self.owned))
        self.fixed_keys = [k for k in fed.model.state_dict() if k not in everyone]  # e.g. prior_means
        clients = [_shared(c) for c in fed.clients]
        image_shape = tuple(clients[0].images.shape[1:])
        ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._closed = False
        # spawn starts multiprocessing's resource-tracker process (once per interpreter); nothing
        # of ours is registered with it, so if this pool started it, close() stops it again
        self._own_tracker = getattr(resource_tracker._resource_tracker, "_fd", 0) is None
        self.start_seconds = 0.0  # wall time of the start-up
        self.round_stats: list[dict] = []  # last call: client, worker index, CPU seconds in the worker
        start = time.perf_counter()
        try:
            for i in range(workers):
                here, there = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=_worker_main,
                    args=(there, fed.cfg, clients, image_shape, fed.cfg.federation.threads),
                    name=f"fissionvae-worker-{i}",
                    daemon=True,
                )
                proc.start()
                there.close()
                self._workers.append(_Worker(i, proc, here))
            for w in self._workers:
                self._expect_ready(w)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - start

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def _expect_ready(self, w: _Worker) -> None:
        if not wait([w.conn, w.process.sentinel], timeout=_START_TIMEOUT):
            raise WorkerError(f"worker {w.index} did not start within {_START_TIMEOUT:.0f} s")
        message = self._receive(w)
        if message[0] != "ready":
            raise WorkerError(f"worker {w.index} failed to start:\n{message[2]}")

    def _receive(self, w: _Worker) -> tuple:
        try:
            return pickle.loads(w.conn.recv_bytes())
        except (EOFError, OSError):
            w.process.join(5)
            doing = f" while training client {w.client}" if w.client is not None else ""
            raise WorkerError(
                f"worker {w.index} (pid {w.process.pid}) died{doing} (exit code {w.process.exitcode})"
            ) from None

    def __call__(
        self,
        weights: Mapping[str, Tensor],
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: Mapping[int, dict],
    ) -> list[Reply]:
        if self._closed:
            raise WorkerError("the worker pool is closed")
        states = client_states
        self.round_stats = []
        fixed = {k: weights[k] for k in self.fixed_keys}
        pending = deque(participants)
        idle = deque(self._workers)
        busy: dict[Connection, _Worker] = {}
        replies: dict[int, ClientResult] = {}
        bar = tqdm(
            total=len(participants), desc=f"round {round_index + 1} clients", leave=False, disable=not self.progress
        )
        try:
            while pending or busy:
                while pending and idle:
                    w, cid = idle.popleft(), pending.popleft()
                    sent = {k: weights[k] for k in self.owned[cid]}
                    w.client = cid
                    try:
                        w.conn.send_bytes(_dumps((spec, cid, sent, fixed, states.get(cid))))
                    except OSError:
                        self._receive(w)  # raises WorkerError naming the dead worker
                    busy[w.conn] = w
                sentinels = {w.process.sentinel: w for w in busy.values()}
                done: dict[int, _Worker] = {}  # a worker's pipe and sentinel may both be ready
                for r in wait([*busy, *sentinels]):
                    w = busy.get(r) or sentinels[r]
                    done[w.index] = w
                for w in done.values():
                    message = self._receive(w)  # a dead worker raises here
                    del busy[w.conn]
                    if message[0] == "error":
                        last = (message[2].strip().splitlines() or ["?"])[-1]  # the exception, for one-line reports
                        where = f"client {message[1]} failed in worker {w.index} (pid {w.process.pid})"
                        raise WorkerError(f"{where}: {last}\n{message[2]}")
                    replies[message[1]] = message[2]
                    self.round_stats.append({"client": message[1], "worker": w.index, "cpu_seconds": message[3]})
                    w.client = None
                    idle.append(w)
                    bar.update(1)
        except BaseException:
            self.close()  # workers may be mid-task: the pool cannot be reused
            raise
        finally:
            bar.close()
        return [replies[cid] for cid in participants]

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker and reap it (idempotent): idle ones exit, busy ones are terminated."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if w.client is None and w.process.is_alive():
                try:
                    w.conn.send_bytes(_dumps(None))
                except OSError:
                    pass
            else:
                w.process.terminate()
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
            w.process.close()
        if self._own_tracker:
            try:
                resource_tracker._resource_tracker._stop()
            except Exception:  # pragma: no cover - private API; the tracker exits with the interpreter anyway
                pass

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shared(client: ClientData) -> ClientData:
    """The client with its tensors in shared memory (moved in place: the server keeps one copy)."""
    for t in (client.images, client.labels, client.group_ids):
        t.share_memory_()
    return client


def _keep_freed_memory() -> None:
    """Tell glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    Every training step frees the previous gradients and allocates new ones (4.3 MB for the
    Mixed MNIST MLP); with glibc's defaults much of that comes back as fresh pages, 50-480 page
    faults per step (measured). Keeping them (mmap threshold 32 MB, trim threshold 512 MB) made
    a step ~10% faster (4.12 vs 4.61 ms, mean of 6 alternating pairs of processes, 300 steps
    each, faster in all 6) and changes no number.
    Worker processes only: the server process may be someone else's (a notebook), so it is left
    alone. A no-op where glibc is not the C library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _worker_main(conn: Connection, cfg: RunConfig, clients: list[ClientData], image_shape: tuple, threads: int) -> None:
    """A worker's life: build the model, then train one client per task until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _keep_freed_memory()
    try:
        from fissionvae.models.vae import build_model

        torch.set_num_threads(threads)
        model = build_model(cfg, image_shape)
        by_id = {c.client_id: c for c in clients}
        conn.send_bytes(_dumps(("ready", None, None, None)))
    except BaseException:
        conn.send_bytes(_dumps(("error", None, traceback.format_exc(), None)))
        return
    while True:
        try:
            task = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the server is gone
            return
        if task is None:  # stop: nothing to flush, so skip the interpreter's (slow, torch-sized) teardown
            conn.close()
            os._exit(0)
        spec, cid, weights, fixed, optimizer_state = task
        cpu = time.process_time()
        try:
            model.load_state_dict(fixed, strict=False)
            result = client_update(model, weights, by_id[cid], spec, optimizer_state)
            reply = ("ok", cid, result, time.process_time() - cpu)
        except Exception:
            reply = ("error", cid, traceback.format_exc(), None)
        try:
            conn.send_bytes(_dumps(reply))
        except (BrokenPipeError, OSError):
            return


def start_pool(fed: Federation, rounds: int, progress: bool = False) -> WorkerPool | None:
    """The pool ``federation.workers`` asks for a ``train`` call of up to ``rounds`` rounds, or
    None when the clients train in the server process (1 worker, or auto deciding so)."""
    if not fed.clients:
        return None
    n = resolve_workers(fed.cfg, [c.num_samples for c in fed.clients], fed.round_spec(0), rounds)
    return WorkerPool(fed, n, progress) if n > 1 else None
