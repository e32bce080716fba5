"""The dispatcher contract: how the round loop hands a round's participants to whatever trains them.

Every engine supplies one: :class:`InProcessDispatcher` (here), the worker pool
(:class:`~fissionvae.federation.workers.WorkerPool`) and Flower's
(:class:`~fissionvae.federation.flower.serverapp.FlowerDispatcher`). Sampling, reply checks and
aggregation stay with the round loop (:func:`~fissionvae.federation.engine.run_round`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.federation.client import LocalTrainSpec, client_update
from fissionvae.federation.replies import Reply
from fissionvae.federation.server import Federation


class Dispatcher(Protocol):
    """Train ``participants`` from the global ``weights``; return the replies of those that answered.

    ``client_states`` maps client ids to their optimiser state from their previous accepted update
    (``spec.keep_optimizer``; empty otherwise, and for a client's first update). A reply is a
    ``ClientResult`` or, when the engine could not decode it, a ``Rejected``; clients that did not
    answer are simply absent. The replies are untrusted: the round loop checks them.
    """

    def __call__(
        self,
        weights: Mapping[str, Tensor],
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: Mapping[int, dict],
    ) -> list[Reply]: ...


class InProcessDispatcher:
    """Run each participant's :func:`client_update` in this process, one after another."""

    def __init__(self, fed: Federation, progress: bool = False):
        self.fed = fed
        self.progress = progress

    def __call__(
        self,
        weights: Mapping[str, Tensor],
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: Mapping[int, dict],
    ) -> list[Reply]:
        results: list[Reply] = []
        for cid in tqdm(participants, desc=f"round {round_index + 1} clients", leave=False, disable=not self.progress):
            sent = {k: weights[k] for k in self.fed.owned_keys(cid)}
            results.append(client_update(self.fed.model, sent, self.fed.clients[cid], spec, client_states.get(cid)))
        return results


class Replayed:
    """A dispatcher that returns replies already received (Flower's Strategy path hands them over this way)."""

    def __init__(self, replies: Sequence[Reply]):
        self.replies = list(replies)

    def __call__(
        self,
        weights: Mapping[str, Tensor],
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: Mapping[int, dict],
    ) -> list[Reply]:
        return self.replies
