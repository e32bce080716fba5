"""A loopback Flower deployment for tests, benchmarks and trying one on a single machine.

:class:`LocalDeployment` starts a SuperLink and one SuperNode per logical client on this
machine and stops every process by PID when its ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.data.federated import client_groups
from fissionvae.federation.flower.bindings import NodeBinding, add_binding
from fissionvae.federation.flower.commands import (
    TLSFiles,
    flower_env,
    gate_argv,
    node_configs,
    register_node,
    superlink_argv,
    supernode_argv,
    wait_for_superlink,
    write_connection,
)
from fissionvae.federation.flower.processes import ManagedProcess, ProcessSet, free_port, processes_with_home


class LocalDeployment:
    """A SuperLink, its Fleet API gate and one SuperNode per logical client on this machine (loopback).

    For tests, benchmarks and trying a deployment on one machine. As ``fissionvae flower
    superlink`` does, the SuperLink listens on ``control_address`` (its control API: runs and
    registration) and the gate (:mod:`.gate`) on ``address``, the nodes' address, which serves
    the Fleet API only. ``tls`` serves HTTPS with the given certificates; ``node_auth`` enables
    Flower's node authentication (register the public keys with :meth:`register_node` before
    the nodes start; ``start_nodes=False`` leaves that to you); a key registered for a client is
    bound to it in ``bindings_path`` (pass it to the run as ``node_bindings``). Use as a context
    manager: every process is stopped by PID at exit.
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
        self.address = f"127.0.0.1:{self.port}"  # the gate: Fleet API only
        self.control_address = f"127.0.0.1:{free_port()}"  # the SuperLink itself
        self.bindings_path = self.workdir / "node-bindings.json"
        self._bindings_lock = threading.Lock()
        self.env = flower_env(self.workdir / "home", env_extra)
        self.superlink: ManagedProcess | None = None
        self.gate: ManagedProcess | None = None
        self.nodes: dict[str, ManagedProcess] = {}  # label (client id, or a name) -> process
        write_connection(self.workdir / "home", self.control_address, tls.ca_cert if tls else None)

    @property
    def root_certificates(self) -> Path | None:
        return self.tls.ca_cert if self.tls else None

    def start(self, start_nodes: bool = True) -> LocalDeployment:
        """Start the SuperLink (and, by default, every SuperNode); on failure stop what started."""
        try:
            host, port = self.control_address.rsplit(":", 1)
            argv = superlink_argv(host, int(port), tls=self.tls, node_auth=self.node_auth)
            self.superlink = self.procs.start("flower-superlink", argv, self.env, self.workdir / "superlink.log")
            wait_for_superlink(self.control_address, self.superlink, self.root_certificates)
            gate = gate_argv(self.address, self.control_address, self.tls)
            self.gate = self.procs.start("fleet gate", gate, self.env, self.workdir / "gate.log")
            wait_for_superlink(self.address, self.gate, self.root_certificates)
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
        env_extra: dict[str, str] | None = None,
    ) -> ManagedProcess:
        """Start the SuperNode of ``client_id`` (``label`` names its process and log; default: the id).

        ``trust_ca=False`` starts it without the CA certificate (plain HTTP), as a node that does
        not trust a TLS SuperLink would; ``max_retries`` makes it give up connecting after that many tries;
        ``env_extra`` is added to its environment (and its ClientApps').
        """
        label = label or str(client_id)
        config = node_configs(self.cfg, self.data_dir)[client_id]
        env = flower_env(self.workdir / f"node-{label}-home", env_extra)
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

    def register_node(self, public_key: str | Path, client_id: int | None = None) -> int:
        """Register ``public_key`` on the SuperLink (its control API); bind it to ``client_id`` if given.

        Returns the node id; raises FlowerRunError if Flower refuses.
        """
        node_id = register_node(public_key, self.env)
        if client_id is not None:
            config = {k: v for k, v in node_configs(self.cfg)[client_id].items() if k != "data-dir"}
            with self._bindings_lock:  # registrations may run in parallel threads
                add_binding(self.bindings_path, NodeBinding(config, node_id, Path(public_key).read_text().strip()))
        return node_id

    def kill_node(self, label: int | str, hard: bool = False) -> None:
        """Stop one SuperNode and its ClientApp processes by PID; ``hard``: SIGKILL, like a crash."""
        proc = self.nodes[str(label)]
        if hard:
            self.procs.kill(proc)
        else:
            self.procs.stop(proc, timeout=5.0)

    def stop(self) -> None:
        """Stop every process of the deployment, and then any stray that left our process groups.

        Flower 1.42's SuperNode can leave its SuperExec child running when it gives up (a node
        refused a client, for example); such a child carries this deployment's ``FLWR_HOME``.
        """
        self.procs.stop_all()
        for pid in processes_with_home(self.workdir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
