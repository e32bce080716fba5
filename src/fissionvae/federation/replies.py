"""What the server accepts from a client: every reply is untrusted input, checked before aggregation.

A dispatcher (any engine) returns one :data:`Reply` per participant that answered: a
:class:`~fissionvae.federation.client.ClientResult`, or a :class:`Rejected` when the engine could
not even decode it (a malformed Flower message). :func:`screen_replies` turns a round's replies
into the accepted results and explicit :class:`Rejected` values (logged in ``metrics.jsonl``).
A reply is rejected, never crashed on, when

- its client id is not an int, or that client was not drawn this round, or two or more replies
  claim the same client (all of them are rejected: the server cannot tell which is genuine, and
  keeping the first would make the model depend on arrival order);
- its groups are not the client's groups;
- its sample count is not exactly the size of the client's partition, which the server knows
  from the config and data (a count the client claims is never used; it must be an ``int``, not a
  bool, float, string or a number above :data:`MAX_SAMPLES`);
- its weights are not a dict of plain CPU dense (strided) tensors holding exactly the keys the
  client owns, with the global shapes and dtypes and finite values (meta, sparse, quantised,
  other-device tensors and tensor subclasses are refused);
- its metrics are not a dict of finite int/float values under the round's common metric names
  (the most frequent name set among the otherwise valid replies; ties go to the lowest client id).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fissionvae.federation.client import ClientResult

#: No partition is this big; a larger claimed count is refused before it is even compared.
MAX_SAMPLES = 2**31 - 1


class InvalidUpdate(ValueError):
    """A client reply that must not be averaged in (wrong keys, shapes, dtypes, counts, non-finite values)."""


@dataclass(frozen=True)
class Rejected:
    """A reply the server refused, and why (``client_id`` None when the reply named no valid client)."""

    client_id: int | None
    reason: str

    def as_record(self) -> dict:
        return {"client": self.client_id, "reason": self.reason}


#: What a dispatcher returns for each participant that answered.
Reply = ClientResult | Rejected


@dataclass(frozen=True)
class Expected:
    """What the server knows about a client before it replies."""

    keys: Sequence[str]  # the keys it owns (encoder + its group's branch)
    num_samples: int  # its partition size, from the config and the data
    groups: Sequence[int]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_update(
    global_weights: Mapping[str, Tensor], allowed_keys: Sequence[str], result: ClientResult, num_samples: int | None
) -> None:
    """Raise InvalidUpdate unless ``result`` carries exactly ``allowed_keys`` as plain dense CPU tensors
    with the global shapes/dtypes, all finite, and (when given) the server-known ``num_samples``."""
    who = f"client {result.client_id}"
    n = result.num_samples
    if type(n) is not int or not 0 < n <= MAX_SAMPLES:
        raise InvalidUpdate(f"{who}: sample count must be a positive int up to {MAX_SAMPLES}, got {_short(n)}")
    if num_samples is not None and n != num_samples:
        raise InvalidUpdate(f"{who}: claims {n} samples, but its partition holds {num_samples}")
    weights = result.weights
    if not isinstance(weights, dict):
        raise InvalidUpdate(f"{who}: weights must be a dict of tensors, got {type(weights).__name__}")
    keys, allowed = set(weights), set(allowed_keys)
    if keys != allowed:
        missing = sorted(map(_short, allowed - keys))[:3]
        unexpected = sorted(map(_short, keys - allowed))[:3]
        raise InvalidUpdate(f"{who}: keys differ from its owned keys (missing {missing}, unexpected {unexpected})")
    for key in sorted(keys):
        got, want = weights[key], global_weights[key]
        if type(got) is not torch.Tensor:
            raise InvalidUpdate(f"{who}: {key} is a {type(got).__name__}, not a plain torch.Tensor")
        if got.device.type != "cpu" or got.layout != torch.strided or got.is_quantized:
            raise InvalidUpdate(f"{who}: {key} is a {got.layout} tensor on {got.device}, expected dense on cpu")
        if got.shape != want.shape or got.dtype != want.dtype:
            raise InvalidUpdate(
                f"{who}: {key} is {tuple(got.shape)}/{got.dtype}, expected {tuple(want.shape)}/{want.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise InvalidUpdate(f"{who}: {key} has non-finite values")


def check_metrics(result: ClientResult) -> None:
    """Raise InvalidUpdate unless the metrics are a dict of finite numbers under string names."""
    metrics = result.metrics
    if not isinstance(metrics, dict):
        raise InvalidUpdate(f"client {result.client_id}: metrics must be a dict, got {type(metrics).__name__}")
    for name, value in metrics.items():
        if type(name) is not str or type(value) not in (int, float) or not math.isfinite(value):
            who = f"client {result.client_id}"
            raise InvalidUpdate(f"{who}: metric {_short(name)} = {_short(value)} is not a finite number")


def screen_replies(
    replies: Sequence[Any], global_weights: Mapping[str, Tensor], expected: Mapping[int, Expected]
) -> tuple[list[ClientResult], list[Rejected]]:
    """Split a round's replies into accepted results (client-id order) and rejections.

    ``expected`` maps each client drawn this round to what the server knows about it.
    """
    rejected: list[Rejected] = []
    candidates: list[ClientResult] = []
    for reply in replies:
        if isinstance(reply, Rejected):
            rejected.append(reply)
        elif not isinstance(reply, ClientResult):
            rejected.append(Rejected(None, f"a reply must be a ClientResult, got {type(reply).__name__}"))
        elif type(reply.client_id) is not int or reply.client_id not in expected:
            rejected.append(Rejected(None, f"client {_short(reply.client_id)} was not asked to train in this round"))
        else:
            candidates.append(reply)
    counts = Counter(r.client_id for r in candidates)
    valid: list[ClientResult] = []
    for reply in candidates:
        cid = reply.client_id
        try:
            if counts[cid] > 1:
                raise InvalidUpdate(f"client {cid}: {counts[cid]} replies for one client (all rejected)")
            want = expected[cid]
            if reply.groups != list(want.groups):
                raise InvalidUpdate(f"client {cid}: claims groups {_short(reply.groups)}, expected {list(want.groups)}")
            check_update(global_weights, want.keys, reply, want.num_samples)
            check_metrics(reply)
            valid.append(reply)
        except InvalidUpdate as exc:
            rejected.append(Rejected(cid, str(exc)))
    valid.sort(key=lambda r: r.client_id)
    if valid:  # metrics are averaged by name: every accepted reply must report the same names
        common = Counter(frozenset(r.metrics) for r in valid).most_common(1)[0][0]
        for r in [r for r in valid if frozenset(r.metrics) != common]:
            valid.remove(r)
            reason = f"client {r.client_id}: metric names {sorted(r.metrics)} differ from {sorted(common)}"
            rejected.append(Rejected(r.client_id, reason))
    return valid, rejected
