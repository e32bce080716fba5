"""The Flower ServerApp: the engine's round loop with a dispatcher that talks to SuperNodes.

It reads the run folder named by the run config's ``run-dir`` (``config.yaml``; a checkpoint
there means: resume from the last complete round), builds the server's view of the federation
(test sets, model template; no training data), waits up to ``node-wait`` seconds for a SuperNode
per logical client, then calls :func:`fissionvae.federation.engine.train` with a
:class:`FlowerDispatcher`. Everything the in-process engine writes is written the same way:
metrics.jsonl, checkpoints/latest.pt after every round, status.json, images/ and plots/.
Flower-specific records go to ``<run>/flower/``: ``nodes.json`` (client -> node) and
``exchanges.jsonl`` (per round: which node got which client, replies, error replies with their
reasons, clients that timed out, seconds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from torch import Tensor

from fissionvae.federation.client import LocalTrainSpec
from fissionvae.federation.engine import Federation, train
from fissionvae.federation.flower.bindings import client_nodes
from fissionvae.federation.flower.clientapp import client_id_for
from fissionvae.federation.flower.launch import SERVERAPP_PROCESS, check_flower_config
from fissionvae.federation.flower.processes import this_process
from fissionvae.federation.flower.strategy import GroupFedAvg, NodeDirectory, exchange
from fissionvae.federation.replies import Reply
from fissionvae.io import append_jsonl, atomic_write_json
from fissionvae.runs import RunDir


@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's run config (``[tool.flwr.app.config]`` of the app, overridden per run)."""

    run_dir: str
    data_dir: str = ""
    max_rounds: int = 0
    round_timeout: float = 3600.0
    node_wait: float = 120.0
    poll_interval: float = 0.5
    node_bindings: str = ""

    @classmethod
    def from_run_config(cls, run_config) -> ServerSettings:
        s = cls(
            run_dir=str(run_config.get("run-dir", "")),
            data_dir=str(run_config.get("data-dir", "")),
            max_rounds=int(run_config.get("max-rounds", 0)),
            round_timeout=float(run_config.get("round-timeout", 3600.0)),
            node_wait=float(run_config.get("node-wait", 120.0)),
            poll_interval=float(run_config.get("poll-interval", 0.5)),
            node_bindings=str(run_config.get("node-bindings", "")),
        )
        if not s.run_dir:
            raise ValueError(
                "run config 'run-dir' is empty: start runs with `fissionvae train --engine flower|flower-sim`, or "
                "pass --run-config 'run-dir=\"...\"' to flwr run"
            )
        if s.round_timeout <= 0 or s.poll_interval <= 0 or s.node_wait < 0 or s.max_rounds < 0:
            raise ValueError(f"invalid Flower run config: {s}")
        return s


class FlowerDispatcher:
    """The engine's Dispatcher over a Flower Grid: participants' owned weights out, replies back.

    Participants without a node and nodes that do not answer within ``round_timeout`` are
    simply absent from the returned replies (the engine logs them as ``missing``); error
    replies are logged here (``exchanges.jsonl``) and count as missing too; malformed replies
    are returned as results the engine rejects (logged as ``rejected``).
    """

    def __init__(
        self,
        grid: Grid,
        strategy: GroupFedAvg,
        round_timeout: float = 3600.0,
        poll_interval: float = 0.5,
        log_dir: str | Path | None = None,
    ):
        self.grid = grid
        self.strategy = strategy
        self.directory = strategy.directory
        self.round_timeout = round_timeout
        self.poll_interval = poll_interval
        self.log_dir = Path(log_dir) if log_dir is not None else None

    def __call__(
        self,
        weights: Mapping[str, Tensor],
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: Mapping[int, dict],
    ) -> list[Reply]:
        if spec.keep_optimizer:
            raise ValueError("Flower clients keep no optimiser state between rounds (see launch.check_flower_config)")
        start = time.perf_counter()
        self.directory.refresh(participants)
        self.write_nodes()
        pairs = self.strategy.train_messages(weights, round_index, participants, spec)
        replies, client_of = exchange(self.grid, pairs, self.round_timeout, self.poll_interval)
        results, errors = self.strategy.decode_replies(replies, client_of)
        answered = {r.client_id for r in results} | {e["client"] for e in errors}
        record = {
            "round": round_index + 1,
            "participants": list(participants),
            "sent": {str(cid): m.metadata.dst_node_id for cid, m in pairs},
            "no_node": [c for c in participants if self.directory.node_of(c) is None],
            "replied": sorted(r.client_id for r in results if r.client_id is not None),
            "errors": errors,
            "timed_out": sorted(set(client_of.values()) - answered),
            "push_failed": len(pairs) - len(client_of),
            "seconds": time.perf_counter() - start,
        }
        for e in errors:
            log(WARNING, "round %d: client %d sent an error reply: %s", round_index + 1, e["client"], e["reason"])
        if record["timed_out"] or record["no_node"]:
            log(
                WARNING,
                "round %d: no reply from clients %s (no node: %s)",
                round_index + 1,
                record["timed_out"],
                record["no_node"],
            )
        log(
            INFO,
            "round %d: %d/%d replies in %.1f s",
            round_index + 1,
            len(results),
            len(participants),
            record["seconds"],
        )
        if self.log_dir is not None:
            append_jsonl(self.log_dir / "exchanges.jsonl", [record])
        return results

    def write_nodes(self) -> None:
        if self.log_dir is not None and self.directory.changed:
            atomic_write_json(self.log_dir / "nodes.json", self.directory.as_json())
            self.directory.changed = False


def serve(grid: Grid, settings: ServerSettings) -> int:
    """Train (or resume) the run in ``settings.run_dir`` over ``grid``; returns the rounds done."""
    run = RunDir.open(settings.run_dir)
    cfg = run.load_config()
    check_flower_config(cfg)
    data_dir = settings.data_dir or None
    fed = Federation.from_config(cfg, data_dir, with_clients=False)
    log_dir = run.path / "flower"
    log_dir.mkdir(exist_ok=True)
    atomic_write_json(log_dir / SERVERAPP_PROCESS, this_process())  # `fissionvae train` stops it if the SuperLink dies
    bindings = client_nodes(settings.node_bindings, cfg, client_id_for) if settings.node_bindings else None
    directory = NodeDirectory(
        grid, fed, settings.poll_interval, query_timeout=min(settings.round_timeout, 60.0), bindings=bindings
    )
    strategy = GroupFedAvg(fed, directory, message_ttl=settings.round_timeout)
    dispatcher = FlowerDispatcher(grid, strategy, settings.round_timeout, settings.poll_interval, log_dir)
    n = len(fed.client_groups)
    nodes_file = log_dir / "nodes.json"
    if nodes_file.is_file():  # a resumed run: nodes that served it and are still online keep their clients
        restored = directory.restore(json.loads(nodes_file.read_text()))
        log(
            INFO,
            "fissionvae: %d SuperNode(s) of the previous ServerApp still online (clients %s)",
            len(restored),
            restored,
        )
    log(
        INFO,
        "fissionvae: run %s, %d logical clients; waiting up to %.0f s for their SuperNodes",
        run.path,
        n,
        settings.node_wait,
    )
    missing = directory.refresh(range(n), wait=settings.node_wait)
    dispatcher.write_nodes()
    if missing:
        log(WARNING, "fissionvae: no SuperNode for clients %s; their rounds count them as missing", missing)
    state = train(
        cfg,
        run,
        data_dir=data_dir,
        max_rounds=settings.max_rounds or None,
        progress=False,
        federation=fed,
        dispatch=dispatcher,
    )
    status = json.loads(run.status_path.read_text())
    log(INFO, "fissionvae: %d of %d rounds done (%s)", state.round, status["rounds_planned"], status["state"])
    return state.round


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, ServerSettings.from_run_config(context.run_config))
