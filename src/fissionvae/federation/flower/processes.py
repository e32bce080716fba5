"""OS processes of a Flower run: each started in its own session, all stopped by PID.

:class:`ProcessSet` starts processes in their own session (process group) and stops each one
with SIGTERM to its group, then SIGKILL to the group and to every descendant PID it saw, and
reaps it: nothing outlives the command or test, also on errors (``finally``). On Linux a child
also gets SIGTERM when the process that started it dies. :func:`processes_with_home` finds
strays by their ``FLWR_HOME`` in ``/proc/*/environ``.

Nothing here knows about Flower beyond that environment variable.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


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


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat``), or None if it is gone.

    A PID plus its start time names one process, even after the PID is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def this_process() -> dict:
    """``{"pid", "start"}`` of the calling process (for :func:`kill_recorded`)."""
    return {"pid": os.getpid(), "start": start_time(os.getpid())}


def kill_recorded(record: dict, timeout: float = 10.0) -> bool:
    """Stop the process named by a :func:`this_process` record and its descendants, if it still runs.

    SIGTERM to the process and its descendants, then SIGKILL to those left after ``timeout``.
    Returns True if it was running (a reused PID with another start time is left alone).
    """
    pid = int(record.get("pid", 0))
    if pid <= 0 or pid == os.getpid() or start_time(pid) != record.get("start") or not pid_alive(pid):
        return False
    tree = descendants(pid) | {pid}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
    return True


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


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
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
                preexec_fn=die_with_parent,
            )
        finally:
            if isinstance(log_fh, io.BufferedWriter):
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
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout)
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

    def kill(self, proc: ManagedProcess) -> None:
        """SIGKILL the process, its group and every descendant at once (like a crash), then reap it."""
        tree = descendants(proc.pid) | {proc.pid}
        self.seen_pids |= tree
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.popen.wait(10)

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
