"""Flower engines: the same federation on Flower's simulation runtime or a real deployment.

The Flower ServerApp runs the in-process engine's own round loop
(:func:`fissionvae.federation.engine.train`) with a :class:`FlowerDispatcher` that sends each
participant its owned weights as a Flower ``Message`` and turns the replies back into
:class:`~fissionvae.federation.client.ClientResult` s; sampling, reply checks, aggregation,
metrics, checkpoints, resume and artifacts are therefore the engine's code. The ClientApp loads
the node's own data partition and calls :func:`~fissionvae.federation.client.client_update`.

Modules (``processes``, ``commands``, ``launch``, ``deployment``, ``gate``, ``bindings``, ``cli`` and
``train_cli`` can be imported without ``flwr`` installed):

- ``messages``: state dicts, round specs, configs and results <-> Flower records.
- ``strategy``: :class:`GroupFedAvg`, the Flower Strategy (configure/aggregate through the
  engine's functions), the node directory (logical client id <-> SuperNode) and the exchange.
- ``serverapp`` / ``clientapp``: the Flower apps (``app`` objects named in ``app/pyproject.toml``).
- ``processes``: OS process management (own sessions, stop by PID, strays by ``FLWR_HOME``).
- ``commands``: Flower command lines, TOML files, the SuperLink connection, ``flwr`` status.
- ``launch``: ``flwr run`` and waiting for it, :func:`train_with_flower`.
- ``deployment``: :class:`LocalDeployment`, a loopback SuperLink + SuperNodes for tests and benchmarks.
- ``security``: TLS certificates and SuperNode keys for Flower's node authentication.
- ``gate``: the SuperLink's public address, forwarding the Fleet API only (the control API stays on loopback).
- ``bindings``: the operator's node bindings (logical client -> registered node id).
- ``cli``: the ``fissionvae flower ...`` commands; ``train_cli``: the ``--engine flower-sim|flower`` part of ``train``.
"""

from __future__ import annotations

from pathlib import Path

#: The Flower app project (``pyproject.toml`` naming the ServerApp and ClientApp) given to ``flwr run``.
APP_DIR = Path(__file__).resolve().parent / "app"

#: Engine names accepted by ``fissionvae train --engine``.
FLOWER_ENGINES = ("flower-sim", "flower")
