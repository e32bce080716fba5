"""Flower command lines, TOML files and the SuperLink connection: what drives Flower's own tools.

``flower-superlink`` / ``flower-supernode`` argument lists, ``--node-config`` text, the
``<FLWR_HOME>/config.toml`` connection ``fissionvae``, ``flwr run --run-config`` files, the
``flwr`` client (``flwr ls`` status of a run) and waiting for a SuperLink's ``/health``.

This module does not import ``flwr`` (it drives Flower's command-line tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.federation.flower.processes import ManagedProcess

CONNECTION = "fissionvae"  # name of the SuperLink connection in <FLWR_HOME>/config.toml


class FlowerRunError(RuntimeError):
    """A Flower run failed, was stopped or did not finish its rounds (the run folder stays resumable)."""


class SuperLinkUnreachable(FlowerRunError):
    """``flwr`` got no answer about a run from the SuperLink (it crashed, stopped or lost the run)."""


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


def gate_argv(listen: str, upstream: str, tls: TLSFiles | None = None) -> list[str]:
    """The Fleet API gate (:mod:`.gate`): ``listen`` is the public address, ``upstream`` the loopback SuperLink."""
    argv = [sys.executable, "-m", "fissionvae.federation.flower.gate", "--listen", listen, "--upstream", upstream]
    if tls is not None:
        argv += ["--certfile", str(tls.server_cert), "--keyfile", str(tls.server_key), "--cafile", str(tls.ca_cert)]
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


def toml_value(value) -> str:
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
    path.write_text("".join(f"{key} = {toml_value(v)}\n" for key, v in values.items()))
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
        reason = (info or {}).get("error-message") or (res.stderr.strip() or res.stdout.strip() or "no output")
        raise SuperLinkUnreachable(f"flwr ls --run-id {run_id}: {str(reason).splitlines()[-1][:300]}")
    return info["runs"][0]


def register_node(public_key: str | Path, env: dict[str, str]) -> int:
    """``flwr supernode register <public key>`` on the connection's SuperLink; returns the node id.

    Needs the SuperLink's control API, which :mod:`.gate` keeps on its loopback: this works only
    on the SuperLink's machine. Raises FlowerRunError with Flower's one-line reason otherwise.
    """
    res = flwr(["supernode", "register", str(public_key), CONNECTION, "--format", "json"], env)
    info = _last_json(res.stdout) or {}
    node_id = info.get("node-id")
    if res.returncode != 0 or not info.get("success") or not isinstance(node_id, int):
        reason = info.get("error-message") or (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:]
        raise FlowerRunError(f"registering {public_key} failed: {reason}")
    return node_id
