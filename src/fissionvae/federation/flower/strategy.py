"""Group-aware FedAvg as a Flower Strategy, the node directory and the message exchange.

:class:`GroupFedAvg` is a ``flwr.serverapp.strategy.FedAvg`` whose pieces are the in-process
engine's functions, never copies of them:

- ``configure_train``: Bernoulli participation per logical client from (seed, round)
  (:func:`~fissionvae.federation.sampling.sample_participants`, as ``run_round`` draws it), and
  one message per participant holding ONLY the keys that client owns (encoder + its group's
  branch), addressed to the SuperNode that serves that client.
- ``aggregate_train``: replies -> :class:`ClientResult` or ``Rejected`` -> the engine's ``run_round``
  (reply checks of :mod:`fissionvae.federation.replies`, then group-aware ``aggregate``: encoder
  over all replies, branch g over group g's replies, the configured rule, heterogeneous shapes, a
  branch nobody sent kept).
  Flower does not hand ``aggregate_train`` the global model, so the strategy keeps it
  (``self.weights``); a group that sat out a round keeps its branch.

``fissionvae``'s ServerApp does not call ``Strategy.start``: it runs the engine's
:func:`~fissionvae.federation.engine.train` (metrics.jsonl, checkpoints, resume, artifacts) with a
:class:`~fissionvae.federation.flower.serverapp.FlowerDispatcher`, which uses this strategy's
``train_messages`` and ``decode_replies`` (the two halves of configure/aggregate that depend on
Flower) and leaves sampling, checks and aggregation to ``run_round``, i.e. to the same functions.
``GroupFedAvg.start(...)`` remains available for plain Flower use (no run folder).

Logical clients map to SuperNodes through node config: a node with ``group=<name or index>``
and ``partition=<i>`` serves client ``(clients of the groups before) + i`` (the order of
:func:`~fissionvae.data.federated.client_groups`); a simulated node's ``partition-id`` is the
client id. The :class:`NodeDirectory` learns the mapping by sending each new node a ``query``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import Tensor

from fissionvae.federation.client import LocalTrainSpec
from fissionvae.federation.dispatch import Replayed
from fissionvae.federation.engine import Federation, run_round
from fissionvae.federation.flower import messages as wire
from fissionvae.federation.replies import Reply
from fissionvae.federation.sampling import sample_participants


def exchange(
    grid: Grid, pairs: Sequence[tuple[int, Message]], timeout: float, poll_interval: float
) -> tuple[list[Message], dict[str, int]]:
    """Push ``(client id, message)`` pairs, pull replies until all arrived or ``timeout`` s passed.

    Returns the replies (error replies included) and the map message id -> client id. Replies
    that arrive after the timeout are never looked at (the messages' TTL expires them).
    """
    if not pairs:
        return [], {}
    ids = list(grid.push_messages([m for _, m in pairs]))
    client_of = {mid: cid for (cid, _), mid in zip(pairs, ids) if mid}
    pending = set(client_of)
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending:
        got = list(grid.pull_messages(sorted(pending)))
        replies.extend(got)
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
    return replies, client_of


class NodeDirectory:
    """Which SuperNode serves which logical client, learnt by ``query`` messages.

    Each online node is asked once which client it serves; a node that leaves is forgotten (and
    asked again if it comes back); a query unanswered after ``query_timeout`` seconds is dropped
    and the node asked again in the next call, without waiting for it any more. With ``bindings``
    (logical client id -> node id, from the operator's node-bindings file) a claim to a client is
    accepted only from the node bound to it; without, two nodes claiming one client: the first
    keeps it, the other is logged and ignored. :meth:`restore` takes the answers a previous ServerApp of the same run
    recorded (``nodes.json``) for nodes that are still online, so a resumed run does not ask again.
    """

    def __init__(
        self,
        grid: Grid,
        fed: Federation,
        poll_interval: float = 0.5,
        query_timeout: float = 60.0,
        bindings: Mapping[int, int] | None = None,
    ):
        self.grid = grid
        self.bindings = dict(bindings) if bindings is not None else None
        self.fed = fed
        self.poll_interval = poll_interval
        self.query_timeout = query_timeout
        self.node_of_client: dict[int, int] = {}
        self.identity: dict[int, dict] = {}  # node id -> {"client": ..., "node_config": ...}
        self.asked: set[int] = set()
        self.pending: dict[str, tuple[int, float]] = {}  # query message id -> (node id, time sent)
        self.silent: set[int] = set()  # nodes that let a query expire: re-asked, never waited for
        self.changed = False
        shape = tuple(fed.groups[0].train_images.shape[1:])
        self._query = wire.query_content(wire.config_to_json(fed.cfg), shape)

    def node_of(self, client_id: int) -> int | None:
        return self.node_of_client.get(client_id)

    def restore(self, saved: Mapping[str, Mapping]) -> list[int]:
        """Reuse ``as_json()`` answers of nodes still online (a node id is never reused); returns their clients."""
        online = set(self.grid.get_node_ids())
        restored = []
        for cid, entry in saved.items():
            nid = int(entry["node"])
            if nid in online:
                self._register(nid, int(cid), dict(entry.get("node_config", {})))
                self.asked.add(nid)
                restored.append(int(cid))
        return sorted(restored)

    def refresh(self, wanted: Iterable[int], wait: float = 0.0) -> list[int]:
        """Ask new nodes which client they serve; return the ``wanted`` clients left without a node.

        Waits until every wanted client has a node, or until ``wait`` seconds have passed and no
        first query sent in this call is still unanswered (each waited for at most
        ``query_timeout``). With ``wait=0`` (each round) it only waits when a wanted client is
        unserved and a node that just joined has not answered yet; a node that once let a query
        expire is asked again but never waited for, so it cannot stall every round.
        """
        wanted = list(wanted)
        start = time.monotonic()
        deadline = start + wait
        dropped: set[int] = set()  # queries that expired in this call: asked again in the next call
        while True:
            self._collect()
            now = time.monotonic()
            online = set(self.grid.get_node_ids())
            for cid, nid in list(self.node_of_client.items()):
                if nid not in online:
                    log(WARNING, "client %d: its node %d left the federation", cid, nid)
                    del self.node_of_client[cid]
                    self.identity.pop(nid, None)
                    self.changed = True
            for mid, (nid, sent) in list(self.pending.items()):
                if nid not in online or now - sent > self.query_timeout:
                    del self.pending[mid]  # offline, or no answer in time: ask again later
                    self.asked.discard(nid)
                    self.silent.add(nid)
                    dropped.add(nid)
            self.asked &= online
            new = sorted(online - self.asked - dropped)
            if new:
                self._ask(new)
            missing = [c for c in wanted if c not in self.node_of_client]
            waiting = any(sent >= start and nid not in self.silent for nid, sent in self.pending.values())
            if not missing or (now >= deadline and not waiting):
                return missing
            time.sleep(self.poll_interval)

    def _ask(self, node_ids: list[int]) -> None:
        ttl = max(self.query_timeout, 60.0)
        msgs = [Message(self._query, nid, MessageType.QUERY, ttl=ttl) for nid in node_ids]
        now = time.monotonic()
        for nid, mid in zip(node_ids, self.grid.push_messages(msgs)):
            self.asked.add(nid)
            if mid:
                self.pending[mid] = (nid, now)

    def _collect(self) -> None:
        """Register the answers that have arrived (never waits)."""
        if not self.pending:
            return
        for reply in self.grid.pull_messages(sorted(self.pending)):
            nid, _ = self.pending.pop(reply.metadata.reply_to_message_id, (None, 0.0))
            if nid is None:
                continue
            if reply.has_error():
                log(WARNING, "node %d did not identify itself: %s", nid, reply.error.reason)
                continue
            try:
                cid, node_config = wire.parse_identity(reply.content)
            except Exception as exc:  # a malformed identity is logged, never fatal
                log(WARNING, "node %d sent an unreadable identity: %s", nid, exc)
                continue
            self.silent.discard(nid)
            self._register(nid, cid, node_config)

    def _register(self, node_id: int, client_id: int, node_config: dict) -> None:
        if not 0 <= client_id < len(self.fed.client_groups):
            log(
                WARNING,
                "node %d claims client %d, which this federation does not have (0..%d)",
                node_id,
                client_id,
                len(self.fed.client_groups) - 1,
            )
            return
        if self.bindings is not None and self.bindings.get(client_id) != node_id:
            log(
                WARNING,
                "node %d claims client %d, which the node bindings give to node %s: refused",
                node_id,
                client_id,
                self.bindings.get(client_id),
            )
            return
        holder = self.node_of_client.get(client_id)
        if holder is not None and holder != node_id:
            log(WARNING, "node %d also claims client %d (served by node %d): ignored", node_id, client_id, holder)
            return
        self.node_of_client[client_id] = node_id
        self.identity[node_id] = {"client": client_id, "node_config": node_config}
        self.changed = True
        log(INFO, "client %d is served by node %d (%s)", client_id, node_id, node_config)

    def as_json(self) -> dict:
        return {
            str(cid): {"node": nid, "node_config": self.identity.get(nid, {}).get("node_config", {})}
            for cid, nid in sorted(self.node_of_client.items())
        }


class GroupFedAvg(FedAvg):
    """Group-aware FedAvg (encoder over all, branch g within group g) as a Flower Strategy.

    Parameters
    ----------
    fed:
        The server's view of the run (config, model template, client groups; no training data).
    directory:
        Logical client -> SuperNode mapping.
    weights:
        The global model to start from (default: the ``initial_arrays`` given to ``start``).
    message_ttl:
        TTL of training messages in seconds (default: Flower's).
    """

    def __init__(
        self,
        fed: Federation,
        directory: NodeDirectory,
        weights: Mapping[str, Tensor] | None = None,
        message_ttl: float | None = None,
    ):
        super().__init__(
            fraction_train=fed.participation,
            fraction_evaluate=1.0,
            min_train_nodes=0,
            min_evaluate_nodes=0,
            min_available_nodes=0,
            weighted_by_key=wire.NUM_EXAMPLES,
            arrayrecord_key=wire.ARRAYS,
            configrecord_key=wire.CONFIG,
        )
        self.fed = fed
        self.directory = directory
        self.weights: dict[str, Tensor] | None = dict(weights) if weights is not None else None
        self.message_ttl = message_ttl
        self.config_json = wire.config_to_json(fed.cfg)
        self.image_shape = tuple(fed.groups[0].train_images.shape[1:])
        self._sent: list[tuple[int, Message]] = []

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> GroupFedAvg: %d logical clients, participation %.2f (Bernoulli per client per round)",
            len(self.fed.client_groups),
            self.fed.participation,
        )
        log(
            INFO,
            "\t└──> aggregation: fissionvae.federation.aggregation.aggregate (encoder over all, branch g over group g)",
        )

    # ---------------------------------------------------------------- the Flower-facing halves
    def train_messages(
        self, weights: Mapping[str, Tensor], round_index: int, participants: Iterable[int], spec: LocalTrainSpec
    ) -> list[tuple[int, Message]]:
        """One ``train`` message per participant that has a node: its owned keys only."""
        pairs = []
        for cid in participants:
            node = self.directory.node_of(cid)
            if node is None:
                continue
            owned = {k: weights[k] for k in self.fed.owned_keys(cid)}
            content = wire.train_content(cid, owned, spec, self.config_json, self.image_shape)
            pairs.append(
                (cid, Message(content, node, MessageType.TRAIN, group_id=str(round_index + 1), ttl=self.message_ttl))
            )
        return pairs

    def decode_replies(
        self, replies: Iterable[Message], client_of: Mapping[str, int]
    ) -> tuple[list[Reply], list[dict]]:
        """Decoded replies (client-id order) and error replies ``{"client", "code", "reason"}``.

        A malformed reply becomes a :class:`Rejected` value; a second reply for one client is kept
        too, so that the engine's reply checks reject both (:mod:`fissionvae.federation.replies`).
        """
        results: list[Reply] = []
        errors: list[dict] = []
        for msg in replies:
            cid = client_of.get(msg.metadata.reply_to_message_id)
            if cid is None:
                continue
            if msg.has_error():
                errors.append({"client": cid, "code": int(msg.error.code), "reason": str(msg.error.reason)})
                continue
            results.append(wire.parse_result(msg.content, cid))
        return sorted(results, key=lambda r: r.client_id or 0), errors

    # ---------------------------------------------------------------- Flower's Strategy API
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.weights is None:
            self.weights = wire.record_to_state(arrays)
        round_index = server_round - 1
        participants = sample_participants(
            self.fed.cfg.seed, round_index, len(self.fed.client_groups), self.fed.participation
        )
        self.directory.refresh(participants)
        self._sent = self.train_messages(self.weights, round_index, participants, self.fed.round_spec(round_index))
        log(
            INFO,
            "configure_train: %d of %d clients drawn, %d with a node",
            len(participants),
            len(self.fed.client_groups),
            len(self._sent),
        )
        return [m for _, m in self._sent]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.weights is None:
            raise RuntimeError("aggregate_train before configure_train: no global model")
        client_of = {m.metadata.message_id: cid for cid, m in self._sent}  # ids set when pushed
        results, errors = self.decode_replies(replies, client_of)
        outcome = run_round(self.fed, self.weights, server_round - 1, Replayed(results))
        for e in errors:
            log(WARNING, "client %d: error reply: %s", e["client"], e["reason"])
        for r in outcome.rejected:
            log(WARNING, "client %s: reply rejected: %s", r.client_id, r.reason)
        self.weights = outcome.weights
        metrics = {
            "clients": len(outcome.results),
            "participants": len(outcome.participants),
            "rejected": len(outcome.rejected),
        }
        return wire.state_to_record(outcome.weights), MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # evaluation is centralised (the engine's per-round test loss, `fissionvae evaluate`)
