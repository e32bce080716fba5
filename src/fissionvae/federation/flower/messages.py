"""What crosses the wire: Flower records <-> our state dicts, round specs, configs and results.

A training instruction (message type ``train``) carries

- ``arrays`` (ArrayRecord): exactly the keys the client owns (encoder + its group's branch),
- ``config`` (ConfigRecord): ``client-id``, ``spec`` (the round's :class:`LocalTrainSpec` as
  JSON), ``image-shape`` and ``run-config`` (the resolved run config as JSON, so the node needs
  no config file).

A reply carries

- ``arrays`` (ArrayRecord): the owned weights after local training,
- ``metrics`` (MetricRecord): the client's metrics plus ``num-examples`` (Flower's convention),
- ``meta`` (ConfigRecord): ``client-id``, ``groups`` and ``num-examples``.

A ``query`` message (same ``config`` minus the spec) asks a node which logical client it is.
Arrays travel as NumPy ``.npy`` bytes (Flower's ``Array``), so values, dtypes and shapes arrive
bit for bit. No training data ever crosses the wire.

``torch`` is imported only by the functions that handle tensors, so a ClientApp process that
only answers a ``query`` starts fast (a deployed SuperNode starts one process per message).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fissionvae.config import RunConfig, load_config

if TYPE_CHECKING:
    from torch import Tensor

    from fissionvae.federation.client import ClientResult, LocalTrainSpec
    from fissionvae.federation.replies import Rejected

ARRAYS, CONFIG, METRICS, META, IDENTITY = "arrays", "config", "metrics", "meta", "identity"
NUM_EXAMPLES = "num-examples"


# --------------------------------------------------------------------------- tensors


def state_to_record(weights: Mapping[str, Tensor]) -> ArrayRecord:
    """A state dict as an ArrayRecord (CPU, contiguous copies; dtype and shape kept)."""
    record = ArrayRecord()
    for key, value in weights.items():
        record[key] = Array(value.detach().cpu().contiguous().numpy())
    return record


def record_to_state(record: ArrayRecord) -> dict[str, Tensor]:
    """An ArrayRecord back as a state dict of CPU tensors."""
    import torch

    return {key: torch.from_numpy(array.numpy()) for key, array in record.items()}


# --------------------------------------------------------------------------- config


def config_to_json(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def config_from_json(text: str) -> RunConfig:
    return load_config(raw=json.loads(text))


@dataclass(frozen=True)
class TrainJob:
    """A decoded training instruction."""

    client_id: int
    weights: dict[str, Tensor]
    spec: LocalTrainSpec
    cfg: RunConfig
    image_shape: tuple[int, ...]


def query_content(config_json: str, image_shape: tuple[int, ...]) -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord({"run-config": config_json, "image-shape": [int(s) for s in image_shape]})})


def spec_to_json(spec: LocalTrainSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def spec_from_json(text: str) -> LocalTrainSpec:
    from fissionvae.federation.client import LocalTrainSpec

    return LocalTrainSpec(**json.loads(text))


def train_content(
    client_id: int, owned: Mapping[str, Tensor], spec: LocalTrainSpec, config_json: str, image_shape: tuple[int, ...]
) -> RecordDict:
    config = ConfigRecord(
        {
            "client-id": int(client_id),
            "spec": spec_to_json(spec),
            "run-config": config_json,
            "image-shape": [int(s) for s in image_shape],
        }
    )
    return RecordDict({ARRAYS: state_to_record(owned), CONFIG: config})


def parse_query(content: RecordDict) -> tuple[RunConfig, tuple[int, ...]]:
    config = content.config_records[CONFIG]
    return config_from_json(str(config["run-config"])), tuple(int(s) for s in config["image-shape"])


def parse_train(content: RecordDict) -> TrainJob:
    config = content.config_records[CONFIG]
    return TrainJob(
        client_id=int(config["client-id"]),
        weights=record_to_state(content.array_records[ARRAYS]),
        spec=spec_from_json(str(config["spec"])),
        cfg=config_from_json(str(config["run-config"])),
        image_shape=tuple(int(s) for s in config["image-shape"]),
    )


# --------------------------------------------------------------------------- replies


def result_content(result: ClientResult) -> RecordDict:
    metrics = MetricRecord(
        {k: (int(v) if isinstance(v, int) else float(v)) for k, v in result.metrics.items()}
        | {NUM_EXAMPLES: int(result.num_samples)}
    )
    meta = ConfigRecord(
        {
            "client-id": int(result.client_id),
            "groups": [int(g) for g in result.groups],
            NUM_EXAMPLES: int(result.num_samples),
        }
    )
    return RecordDict({ARRAYS: state_to_record(result.weights), METRICS: metrics, META: meta})


def identity_content(client_id: int, node_config: Mapping) -> RecordDict:
    info = {"client-id": int(client_id)} | {
        f"node-{k}": v for k, v in node_config.items() if isinstance(v, (str, int, float, bool))
    }
    return RecordDict({IDENTITY: ConfigRecord(info)})


def parse_identity(content: RecordDict) -> tuple[int, dict]:
    record = content.config_records[IDENTITY]
    return int(record["client-id"]), {k[len("node-") :]: v for k, v in record.items() if k.startswith("node-")}


def parse_result(content: RecordDict, expected_client: int) -> ClientResult | Rejected:
    """The reply to client ``expected_client``'s instruction, decoded but not yet trusted.

    Values are passed on as they came (a count of ``2.5`` or ``"12"`` stays so), for the engine's
    reply checks (:mod:`fissionvae.federation.replies`) to reject. A reply whose records are missing
    or cannot be decoded, or that names another client, becomes a :class:`Rejected` with the reason.
    """
    from fissionvae.federation.client import ClientResult
    from fissionvae.federation.replies import Rejected

    try:
        meta: Mapping[str, Any] = content.config_records[META]  # raw values, checked by the engine
        claimed = meta["client-id"]
        if claimed != expected_client or type(claimed) is not int:
            raise ValueError(f"reply claims client {claimed!r}")
        groups = meta["groups"]
        groups = list(groups) if isinstance(groups, list) else groups
        metrics: dict[str, Any] = {k: v for k, v in content.metric_records[METRICS].items() if k != NUM_EXAMPLES}
        weights = record_to_state(content.array_records[ARRAYS])
        result = ClientResult(expected_client, groups, meta[NUM_EXAMPLES], weights, metrics)
    except Exception as exc:  # any decoding problem makes the reply invalid, never fatal
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        return Rejected(expected_client, f"client {expected_client}: unreadable reply ({type(exc).__name__}: {reason})")
    return result
