"""Flower processes for a run: SuperLink, SuperNodes, ``flwr run``; all stopped by PID.

:func:`train_with_flower` is the entry point of ``fissionvae train --engine flower-sim|flower``:

- ``flower-sim``: starts a SuperLink in simulation mode on a free loopback port (Flower's
  documented local-simulation path: ``flwr run`` against a simulation SuperLink), one simulated
  SuperNode per logical client, and stops it when the command ends.
- ``flower``: submits the run to a SuperLink someone started (``--superlink HOST:PORT``), whose
  SuperNodes serve the logical clients (see docs/flower.md).

Either way ``FLWR_HOME`` is ``<run>/flower/home`` (the connection file, installed app bundles),
runtime dependency installation is disabled, the ServerApp runs the engine's round loop on the
run folder (see :mod:`.serverapp`), and the command waits for the run, checks its final
status and the run folder (``flwr run`` can exit 0 for a failed run), and raises
:class:`FlowerRunError` when the run did not complete.

Every process this module starts gets its own session (process group); :class:`ProcessSet`
stops each one with SIGTERM to its group, then SIGKILL to the group and to every descendant
PID it saw, and reaps it: nothing outlives the command or test, also on errors (``finally``).
:class:`LocalDeployment` is a SuperLink plus one SuperNode per logical client on loopback,
for tests, benchmarks and trying a deployment on one machine.

This module does not import ``flwr`` (it drives Flower's command-line tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.data.federated import client_groups
from fissionvae.federation.flower import APP_DIR, FLOWER_ENGINES
from fissionvae.federation.state import ServerState
from fissionvae.runs import RunDir

CONNECTION = "fissionvae"  # name of the SuperLink connection in <FLWR_HOME>/config.toml


class FlowerRunError(RuntimeError):
    """A Flower run failed, was stopped or did not finish its rounds (the run folder stays resumable)."""


def check_flower_config(cfg: RunConfig) -> None:
    """Raise ValueError for runs the Flower engines do not support (checked before anything starts).

    Flower clients are stateless between rounds: a deployed SuperNode starts a fresh ClientApp
    process for every message and a restarted run is a new Flower run, so there is nowhere to
    keep a client's Adam state (``federation.client_optimizer: keep``; centralised training, one
    client holding all data, always keeps it). Use the in-process engine for those.
    """
    if cfg.mode == "centralized":
        raise ValueError(
            "mode: centralized trains one client holding all data; run it with --engine inprocess (Flower engines are for federations)"
        )
    if cfg.federation.client_optimizer != "reset":
        raise ValueError(
            f"federation.client_optimizer: {cfg.federation.client_optimizer!r} keeps each client's Adam state between rounds, which Flower clients cannot hold; use 'reset' or --engine inprocess"
        )


# --------------------------------------------------------------------------- processes


def flower_bin(name: str) -> str:
    """Path of a Flower executable (beside this Python first, then on PATH)."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the Flower extra (pip install 'fissionvae[flower]')")
    return found


def flower_env(flwr_home: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: FLWR_HOME, this Python's bin dir first on PATH, no telemetry."""
    env = os.environ.copy()
    env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process (Linux /proc)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), rest[0])
    return table


def descendants(pid: int) -> set[int]:
    """PIDs of all living descendants of ``pid``."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in _proc_table().items():
        children.setdefault(parent, []).append(child)
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def processes_with_home(flwr_home: str | Path) -> list[int]:
    """Living processes whose environment has ``FLWR_HOME`` at or below ``flwr_home``.

    Every process a Flower component starts inherits FLWR_HOME (ServerApp, ClientApps, Ray's
    workers and daemons), so this finds strays even if they left our process groups.
    """
    root = str(Path(flwr_home).resolve())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"FLWR_HOME="):
                home = item[len(b"FLWR_HOME=") :].decode(errors="replace")
                if (home == root or home.startswith(root + os.sep)) and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
                break
    return sorted(found)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the process that started it dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def sigterm_raises():
    """While active (main thread only), SIGTERM raises SystemExit so ``finally`` blocks stop our processes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class ProcessSet:
    """Processes started for one command, each in its own session; stopped by PID at exit."""

    processes: list[ManagedProcess] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)  # every PID started or seen below one

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        log_path: str | Path | None = None,
        cwd: str | Path | None = None,
        inherit_output: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in a new session; output to ``log_path`` (or this terminal, or nowhere)."""
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log_path, "ab") if log_path is not None else (None if inherit_output else subprocess.DEVNULL)  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT if log_fh is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if log_path is not None:
                log_fh.close()
        proc = ManagedProcess(name, list(argv), popen, Path(log_path) if log_path is not None else None)
        self.processes.append(proc)
        self.seen_pids.add(popen.pid)
        return proc

    def snapshot(self) -> set[int]:
        """Record the current descendants of every managed process (so they can be stopped by PID)."""
        for proc in self.processes:
            self.seen_pids |= descendants(proc.pid)
        return set(self.seen_pids)

    def stop(self, proc: ManagedProcess, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL the group and every descendant seen."""
        tree = descendants(proc.pid) | {proc.pid}
        self.seen_pids |= tree
        if proc.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        tree |= descendants(proc.pid) if proc.running() else set()
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in tree - {proc.pid}) and time.monotonic() < deadline:
            time.sleep(0.1)  # children shutting down after their parent
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every process: SIGTERM to all groups at once, wait, then SIGKILL what is left."""
        self.snapshot()
        for proc in self.processes:
            if proc.running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in self.seen_pids) and time.monotonic() < deadline:
            self.snapshot()
            time.sleep(0.1)
        for proc in reversed(self.processes):
            self.stop(proc, timeout=1.0)
        for pid in self.seen_pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def alive(self) -> list[int]:
        return sorted(p for p in self.seen_pids if pid_alive(p))

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_superlink(
    address: str, proc: ManagedProcess | None = None, root_certificates: str | Path | None = None, timeout: float = 60.0
) -> None:
    """Wait until the SuperLink's HTTP(S) API answers ``/health``."""
    scheme = "http" if root_certificates is None else "https"
    context = ssl.create_default_context(cafile=str(root_certificates)) if root_certificates is not None else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.running():
            raise FlowerRunError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(f"{scheme}://{address}/health", timeout=2, context=context) as res:  # noqa: S310 (our own URL)
                if res.status == 200:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise FlowerRunError(
        f"SuperLink at {address} did not answer within {timeout:.0f} s" + (f":\n{proc.log_tail()}" if proc else "")
    )


# --------------------------------------------------------------------------- command lines


@dataclass(frozen=True)
class TLSFiles:
    """SuperLink certificate files (PEM): CA certificate, server certificate and its key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def superlink_argv(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    simulation: bool = False,
    tls: TLSFiles | None = None,
    node_auth: bool = False,
    database: str | Path | None = None,
    log_file: str | Path | None = None,
) -> list[str]:
    """A ``flower-superlink`` command line (runtime dependency installation disabled)."""
    argv = [
        flower_bin("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if tls is None:
        argv.append("--insecure")
    else:
        argv += [
            "--ssl-ca-certfile",
            str(tls.ca_cert),
            "--ssl-certfile",
            str(tls.server_cert),
            "--ssl-keyfile",
            str(tls.server_key),
        ]
    if simulation:
        argv.append("--simulation")
    if node_auth:
        argv.append("--enable-supernode-auth")
    if database is not None:
        argv += ["--database", str(database)]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    return argv


def node_config_string(values: dict) -> str:
    """``--node-config`` text: strings quoted (TOML), numbers and booleans bare."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={json.dumps(str(value))}")
    return " ".join(parts)


def supernode_argv(
    superlink: str,
    node_config: dict,
    *,
    port: int = 9094,
    root_certificates: str | Path | None = None,
    auth_private_key: str | Path | None = None,
    max_retries: int | None = None,
) -> list[str]:
    """A ``flower-supernode`` command line; ``port`` is its local ClientApp runtime API port."""
    argv = [
        flower_bin("flower-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        node_config_string(node_config),
    ]
    argv += ["--insecure"] if root_certificates is None else ["--root-certificates", str(root_certificates)]
    if auth_private_key is not None:
        argv += ["--auth-supernode-private-key", str(auth_private_key)]
    if max_retries is not None:
        argv += ["--max-retries", str(max_retries)]
    return argv


def node_configs(cfg: RunConfig, data_dir: str | Path | None = None) -> list[dict]:
    """The node config of each logical client, in client-id order: group name + partition index."""
    out = [{"group": g.name, "partition": p} for g in cfg.data.groups for p in range(g.clients)]
    if data_dir is not None:
        out = [c | {"data-dir": str(Path(data_dir).resolve())} for c in out]
    return out


def write_connection(flwr_home: str | Path, address: str, root_certificates: str | Path | None = None) -> Path:
    """``<FLWR_HOME>/config.toml`` with the SuperLink connection ``fissionvae`` (the default)."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {json.dumps(address)}",
    ]
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates).resolve()))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(str(value))


def write_run_config(path: str | Path, values: dict) -> Path:
    """A TOML file of run-config overrides for ``flwr run --run-config``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} = {_toml_value(v)}\n" for key, v in values.items()))
    return path


def flwr(args: Sequence[str], env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [flower_bin("flwr"), *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _last_json(text: str) -> dict | None:
    for start in [m.start() for m in re.finditer(r"^\{", text, re.M)][::-1]:
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(text[start:])
    return None


def run_status(run_id: int, env: dict[str, str]) -> dict:
    """The run's entry of ``flwr ls --run-id`` (``status`` is e.g. ``finished:completed``)."""
    res = flwr(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], env)
    info = _last_json(res.stdout)
    if not info or not info.get("runs"):
        raise FlowerRunError(f"flwr ls --run-id {run_id} failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")
    return info["runs"][0]


# --------------------------------------------------------------------------- runs


@dataclass
class FlowerOptions:
    """How a run is driven on Flower (all optional).

    ``round_timeout``: seconds to wait for a round's replies (what arrived is aggregated);
    ``node_wait``: seconds the ServerApp waits at start for every client's SuperNode;
    ``poll_interval``: the ServerApp's pull interval; ``client_cpus``: CPUs per simulated client
    (Ray) for ``flower-sim``; ``sim_cpus``: CPUs Ray may use in all (default: all cores), so at
    most ``sim_cpus // client_cpus`` simulated clients train at once; ``root_certificates``: CA certificate of a TLS SuperLink (None:
    plain HTTP); ``echo``: print the ServerApp's log while it runs.
    """

    round_timeout: float = 3600.0
    node_wait: float = 120.0
    poll_interval: float = 0.5
    client_cpus: int = 1
    sim_cpus: int | None = None
    root_certificates: str | Path | None = None
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
        argv += ["--federation-config", " ".join(f"{k}={_toml_value(v)}" for k, v in federation_config.items())]
    log_path = flower_dir / "serverapp.log"
    found: dict = {}
    popen = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    cli = ManagedProcess("flwr run", argv, popen, log_path)
    if procs is not None:
        procs.processes.append(cli)
        procs.seen_pids.add(popen.pid)
    pump = _stream(popen, log_path, echo, found)
    try:
        popen.wait()
        pump.join(10)
        run_id = found.get("run_id")
        if run_id is None:
            raise FlowerRunError(f"flwr run did not start a run (exit code {popen.returncode}):\n{cli.log_tail()}")
        status = run_status(run_id, env)
        for _ in range(3):  # the log stream can end early (connection dropped): follow again
            if str(status.get("status", "")).startswith("finished"):
                break
            again = subprocess.Popen(
                [flower_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if procs is not None:
                procs.processes.append(ManagedProcess("flwr log", again.args, again, log_path))
                procs.seen_pids.add(again.pid)
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
            "--engine flower needs --superlink HOST:PORT (start one with `fissionvae flower superlink`, see docs/flower.md)"
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
    }
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
        status = submit_and_wait(run, env, run_config, federation_config, procs, opts.echo)
    return check_finished(run, cfg, status, start_round, max_rounds)


def check_finished(run: RunDir, cfg: RunConfig, status: dict, start_round: int, max_rounds: int | None) -> ServerState:
    """The run's final state, or FlowerRunError if Flower's status or the run folder says it failed."""
    planned = cfg.effective_rounds
    expected = planned if max_rounds is None else min(planned, start_round + max_rounds)
    state = run.load_state() if run.has_checkpoint() else None
    done = state.round if state is not None else 0
    log = run.path / "flower" / "serverapp.log"
    if status.get("status") != "finished:completed" or done < expected:
        raise FlowerRunError(
            f"Flower run {status.get('run-id')} ended {status.get('status')!r} after {done} of {expected} rounds (details: {status.get('status-details')}); ServerApp log: {log}; the run folder resumes from round {done}"
        )
    return state  # type: ignore[return-value]


# --------------------------------------------------------------------------- loopback deployment


class LocalDeployment:
    """A SuperLink and one SuperNode per logical client on this machine (loopback).

    For tests, benchmarks and trying a deployment on one machine. ``tls`` serves HTTPS with the
    given certificates; ``node_keys`` (one private key per node, or None) enables Flower's node
    authentication (register the public keys with :meth:`register_node` before the nodes
    start; ``start_nodes=False`` leaves that to you). Use as a context manager: every process is
    stopped by PID at exit.
    """

    def __init__(
        self,
        cfg: RunConfig,
        workdir: str | Path,
        *,
        data_dir: str | Path | None = None,
        tls: TLSFiles | None = None,
        node_auth: bool = False,
        clients: Iterable[int] | None = None,
        env_extra: dict[str, str] | None = None,
    ):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.tls = tls
        self.node_auth = node_auth
        self.clients = list(clients) if clients is not None else list(range(len(client_groups(cfg))))
        self.procs = ProcessSet()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = flower_env(self.workdir / "home", env_extra)
        self.superlink: ManagedProcess | None = None
        self.nodes: dict[str, ManagedProcess] = {}  # label (client id, or a name) -> process
        write_connection(self.workdir / "home", self.address, tls.ca_cert if tls else None)

    @property
    def root_certificates(self) -> Path | None:
        return self.tls.ca_cert if self.tls else None

    def start(self, start_nodes: bool = True) -> LocalDeployment:
        """Start the SuperLink (and, by default, every SuperNode); on failure stop what started."""
        try:
            argv = superlink_argv("127.0.0.1", self.port, tls=self.tls, node_auth=self.node_auth, log_file=None)
            self.superlink = self.procs.start("flower-superlink", argv, self.env, self.workdir / "superlink.log")
            wait_for_superlink(self.address, self.superlink, self.root_certificates)
            if start_nodes:
                for cid in self.clients:
                    self.start_node(cid)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(
        self,
        client_id: int,
        auth_private_key: str | Path | None = None,
        label: str | None = None,
        *,
        trust_ca: bool = True,
        max_retries: int | None = None,
    ) -> ManagedProcess:
        """Start the SuperNode of ``client_id`` (``label`` names its process and log; default: the id).

        ``trust_ca=False`` starts it without the CA certificate (plain HTTP), as a node that does
        not trust a TLS SuperLink would; ``max_retries`` makes it give up connecting after that many tries.
        """
        label = label or str(client_id)
        config = node_configs(self.cfg, self.data_dir)[client_id]
        env = flower_env(self.workdir / f"node-{label}-home")
        ca = self.root_certificates if trust_ca else None
        argv = supernode_argv(
            self.address,
            config,
            port=free_port(),
            root_certificates=ca,
            auth_private_key=auth_private_key,
            max_retries=max_retries,
        )
        proc = self.procs.start(f"flower-supernode {label}", argv, env, self.workdir / f"supernode-{label}.log")
        self.nodes[label] = proc
        return proc

    def register_node(self, public_key: str | Path) -> subprocess.CompletedProcess:
        """``flwr supernode register <public key>`` against this SuperLink."""
        return flwr(["supernode", "register", str(public_key), CONNECTION], self.env)

    def kill_node(self, label: int | str, hard: bool = False) -> None:
        """Stop one SuperNode and its ClientApp processes by PID; ``hard``: SIGKILL, like a crash."""
        proc = self.nodes[str(label)]
        if hard:
            tree = descendants(proc.pid) | {proc.pid}
            self.procs.seen_pids |= tree
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            proc.popen.wait(10)
        else:
            self.procs.stop(proc, timeout=5.0)

    def stop(self) -> None:
        self.procs.stop_all()

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
