"""Runs on Flower: ``fissionvae train --engine flower-sim|flower`` drives ``flwr run`` and waits.

:func:`train_with_flower` is the entry point:

- ``flower-sim``: starts a SuperLink in simulation mode on a free loopback port (Flower's
  documented local-simulation path: ``flwr run`` against a simulation SuperLink), one simulated
  SuperNode per logical client, and stops it when the command ends.
- ``flower``: submits the run to a SuperLink someone started (``--superlink HOST:PORT``, its
  control API), whose SuperNodes serve the logical clients (see docs/flower.md).

Either way ``FLWR_HOME`` is ``<run>/flower/home`` (the connection file, installed app bundles),
runtime dependency installation is disabled, the ServerApp runs the engine's round loop on the
run folder (see :mod:`.serverapp`), and the command waits for the run, checks its final
status and the run folder (``flwr run`` can exit 0 for a failed run), and raises
:class:`FlowerRunError` when the run did not complete. Processes: :mod:`.processes`; command
lines and files: :mod:`.commands`; a loopback deployment: :mod:`.deployment`.

This module does not import ``flwr`` (it drives Flower's command-line tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.data.federated import client_groups
from fissionvae.federation.flower import APP_DIR, FLOWER_ENGINES
from fissionvae.federation.flower.bindings import client_nodes
from fissionvae.federation.flower.commands import (
    CONNECTION,
    FlowerRunError,
    SuperLinkUnreachable,
    flower_bin,
    flower_env,
    flwr,
    run_status,
    superlink_argv,
    toml_value,
    wait_for_superlink,
    write_connection,
    write_run_config,
)
from fissionvae.federation.flower.processes import (
    ManagedProcess,
    ProcessSet,
    die_with_parent,
    free_port,
    kill_recorded,
    sigterm_raises,
)
from fissionvae.federation.state import ServerState
from fissionvae.runs import RunDir

SERVERAPP_PROCESS = "serverapp-process.json"  # in <run>/flower: pid and start time of the ServerApp


def check_flower_config(cfg: RunConfig) -> None:
    """Raise ValueError for runs the Flower engines do not support (checked before anything starts).

    Flower clients are stateless between rounds: a deployed SuperNode starts a fresh ClientApp
    process for every message and a restarted run is a new Flower run, so there is nowhere to
    keep a client's Adam state (``federation.client_optimizer: keep``; centralised training, one
    client holding all data, always keeps it). Use the in-process engine for those.
    """
    if cfg.mode == "centralized":
        raise ValueError(
            "mode: centralized trains one client holding all data; run it with --engine inprocess (Flower engines "
            "are for federations)"
        )
    if cfg.federation.client_optimizer != "reset":
        raise ValueError(
            f"federation.client_optimizer: {cfg.federation.client_optimizer!r} keeps each client's Adam state "
            "between rounds, which Flower clients cannot hold; use 'reset' or --engine inprocess"
        )


# --------------------------------------------------------------------------- runs


@dataclass
class FlowerOptions:
    """How a run is driven on Flower (all optional).

    ``round_timeout``: seconds to wait for a round's replies (what arrived is aggregated);
    ``node_wait``: seconds the ServerApp waits at start for every client's SuperNode;
    ``poll_interval``: the ServerApp's pull interval; ``client_cpus``: CPUs per simulated client
    (Ray) for ``flower-sim``; ``sim_cpus``: CPUs Ray may use in all (default: all cores), so at
    most ``sim_cpus // client_cpus`` simulated clients train at once; ``root_certificates``: CA
    certificate of a TLS SuperLink (None: plain HTTP); ``node_bindings``: the operator's
    node-bindings file (:mod:`.bindings`: a client is served only by the node bound to it);
    ``echo``: print the ServerApp's log while it runs.
    """

    round_timeout: float = 3600.0
    node_wait: float = 120.0
    poll_interval: float = 0.5
    client_cpus: int = 1
    sim_cpus: int | None = None
    root_certificates: str | Path | None = None
    node_bindings: str | Path | None = None
    echo: bool = True
    superlink_timeout: float = 60.0


def _stream(proc: subprocess.Popen, log_path: Path, echo: bool, found: dict) -> threading.Thread:
    def pump():
        with open(log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                if "run_id" not in found and (m := re.search(r"started run (\d+)", line)):
                    found["run_id"] = int(m.group(1))
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def submit_and_wait(
    run: RunDir,
    env: dict[str, str],
    run_config: dict,
    federation_config: dict | None = None,
    procs: ProcessSet | None = None,
    echo: bool = True,
) -> dict:
    """``flwr run <app> fissionvae --stream``: submit, stream the log to ``<run>/flower/serverapp.log``.

    Returns the final ``flwr ls`` entry of the run. Ctrl-C stops the Flower run (``flwr stop``).
    """
    flower_dir = run.path / "flower"
    config_file = write_run_config(flower_dir / "run-config.toml", run_config)
    argv = [flower_bin("flwr"), "run", str(APP_DIR), CONNECTION, "--run-config", str(config_file), "--stream"]
    if federation_config:
        argv += ["--federation-config", " ".join(f"{k}={toml_value(v)}" for k, v in federation_config.items())]
    log_path = flower_dir / "serverapp.log"
    found: dict = {}
    popen = _piped("flwr run", argv, env, log_path, procs)
    pump = _stream(popen, log_path, echo, found)
    try:
        popen.wait()
        pump.join(10)
        run_id = found.get("run_id")
        if run_id is None:
            raise FlowerRunError(
                f"flwr run did not start a run (exit code {popen.returncode}; SuperLink down or unreachable?); "
                f"its output is in {log_path}"
            )
        status = run_status(run_id, env)
        for _ in range(3):  # the log stream can end early (connection dropped): follow again
            if str(status.get("status", "")).startswith("finished"):
                break
            follow = [flower_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"]
            again = _piped("flwr log", follow, env, log_path, procs)
            _stream(again, log_path, echo, found)
            again.wait()
            status = run_status(run_id, env)
        while not str(status.get("status", "")).startswith("finished"):
            time.sleep(5)
            status = run_status(run_id, env)
        return status
    except BaseException:
        if (run_id := found.get("run_id")) is not None:
            with contextlib.suppress(Exception):
                flwr(["stop", str(run_id), CONNECTION], env, timeout=30)
        raise
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)


def _piped(name: str, argv: list[str], env: dict, log_path: Path, procs: ProcessSet | None) -> subprocess.Popen[str]:
    """A ``flwr`` command in its own session with its output piped to us, recorded in ``procs``."""
    popen = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    if procs is not None:
        procs.processes.append(ManagedProcess(name, argv, popen, log_path))
        procs.seen_pids.add(popen.pid)
    return popen


def train_with_flower(
    cfg: RunConfig,
    run: RunDir,
    engine: str,
    superlink: str | None = None,
    *,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    options: FlowerOptions | None = None,
    processes: ProcessSet | None = None,
) -> ServerState:
    """Train (or resume) ``run`` on Flower; returns the final server state.

    Parameters
    ----------
    cfg:
        The run's config (must be the run folder's ``config.yaml``, which the ServerApp reads).
    run:
        The run folder; a checkpoint there is resumed from its last complete round.
    engine:
        ``flower-sim`` (Flower's simulation runtime, started and stopped here) or ``flower``
        (a deployment: ``superlink`` is the SuperLink's ``HOST:PORT``).
    data_dir:
        Data folder on the SuperLink's machine (test sets; simulated clients' data).
    max_rounds:
        Stop after this many rounds in this call (resumable), like the in-process engine.
    options:
        Timeouts, polling, CPUs per simulated client, TLS CA, echo (see :class:`FlowerOptions`).
    processes:
        Where to record the processes started (for callers that check PIDs); all are stopped
        before this function returns, also on errors.
    """
    if engine not in FLOWER_ENGINES:
        raise ValueError(f"unknown Flower engine {engine!r} (choose from {FLOWER_ENGINES})")
    if engine == "flower" and not superlink:
        raise ValueError(
            "--engine flower needs --superlink HOST:PORT (start one with `fissionvae flower superlink`, see "
            "docs/flower.md)"
        )
    if engine == "flower-sim" and superlink:
        raise ValueError("--engine flower-sim starts its own simulation SuperLink; --superlink is for --engine flower")
    check_flower_config(cfg)
    if run.load_config().to_dict() != cfg.to_dict():
        raise ValueError(
            f"{run.config_path} differs from the config given: the ServerApp trains what the run folder says"
        )
    opts = options or FlowerOptions()
    flower_dir = run.path / "flower"
    home = flower_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = flower_env(home)
    start_round = run.load_state().round if run.has_checkpoint() else 0
    run_config = {
        "run-dir": str(run.path.resolve()),
        "data-dir": str(Path(data_dir).resolve()) if data_dir is not None else "",
        "max-rounds": int(max_rounds or 0),
        "round-timeout": float(opts.round_timeout),
        "node-wait": float(opts.node_wait),
        "poll-interval": float(opts.poll_interval),
        "node-bindings": str(Path(opts.node_bindings).resolve()) if opts.node_bindings else "",
    }
    if opts.node_bindings:
        check_node_bindings(opts.node_bindings, cfg)
    procs = processes if processes is not None else ProcessSet()
    with sigterm_raises(), procs:
        federation_config = None
        root_certificates = opts.root_certificates
        if engine == "flower-sim":
            port = free_port()
            superlink = f"127.0.0.1:{port}"
            root_certificates = None
            sl = procs.start(
                "flower-superlink (simulation)",
                superlink_argv("127.0.0.1", port, simulation=True),
                env,
                flower_dir / "superlink.log",
            )
            wait_for_superlink(superlink, sl, timeout=opts.superlink_timeout)
            federation_config = {
                "num-supernodes": len(client_groups(cfg)),
                "client-resources-num-cpus": int(opts.client_cpus),
            }
            if opts.sim_cpus is not None:
                federation_config["init-args-num-cpus"] = int(opts.sim_cpus)
        write_connection(home, str(superlink), root_certificates)
        try:
            status = submit_and_wait(run, env, run_config, federation_config, procs, opts.echo)
        except SuperLinkUnreachable as exc:
            stopped = kill_recorded(_serverapp_record(flower_dir))
            done = run.load_state().round if run.has_checkpoint() else 0
            raise FlowerRunError(
                f"the SuperLink at {superlink} stopped answering during the run ({exc}); "
                f"{done} of {cfg.effective_rounds} rounds are checkpointed"
                f"{' and its ServerApp was stopped' if stopped else ''}: "
                f"restart the SuperLink and resume with `fissionvae train --resume {run.path}`"
            ) from None
    return check_finished(run, cfg, status, start_round, max_rounds)


def _serverapp_record(flower_dir: Path) -> dict:
    """What the run's ServerApp recorded about its process (empty if nothing readable)."""
    try:
        record = json.loads((flower_dir / SERVERAPP_PROCESS).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def check_node_bindings(path: str | Path, cfg: RunConfig) -> None:
    """Raise BindingsError (naming the file) unless ``path`` binds clients of ``cfg`` to nodes."""
    from fissionvae.federation.flower.clientapp import client_id_for  # imports flwr

    client_nodes(path, cfg, client_id_for)


def check_finished(run: RunDir, cfg: RunConfig, status: dict, start_round: int, max_rounds: int | None) -> ServerState:
    """The run's final state, or FlowerRunError if Flower's status or the run folder says it failed."""
    planned = cfg.effective_rounds
    expected = planned if max_rounds is None else min(planned, start_round + max_rounds)
    state = run.load_state() if run.has_checkpoint() else None
    done = state.round if state is not None else 0
    log = run.path / "flower" / "serverapp.log"
    if status.get("status") != "finished:completed" or done < expected:
        raise FlowerRunError(
            f"Flower run {status.get('run-id')} ended {status.get('status')!r} after {done} of {expected} rounds "
            f"(details: {status.get('status-details')}); ServerApp log: {log}; the run folder resumes from round "
            f"{done}"
        )
    return state  # type: ignore[return-value]
