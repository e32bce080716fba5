"""The Flower ClientApp: a SuperNode's logical client trains with :func:`client_update`.

Which logical client a node is comes from its node config (``flower-supernode --node-config``):

- ``group=<name or index>`` and ``partition=<i>``: the i-th client of that group (deployment);
- ``client-id=<id>``: the logical client id directly;
- ``partition-id=<id>``: what Flower's simulation gives each simulated node.

``data-dir=<folder>`` in the node config (in simulation: else the run config's ``data-dir``;
then the run config's ``data.dir``, else ``$FISSIONVAE_DATA_DIR`` / the cache) is where the
node reads its images. The node loads its own group's training split and takes its partition exactly as
:func:`~fissionvae.data.federated.build_clients` does (same seeded subset and IID split); no
training data crosses the wire. The resolved run config arrives in every message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fissionvae.config import RunConfig
from fissionvae.federation.flower import messages as wire

if TYPE_CHECKING:  # torch and the training code are imported when a node first trains
    from fissionvae.data.federated import ClientData
    from fissionvae.models.protocol import GenerativeModel


def num_clients(cfg: RunConfig) -> int:
    """len(client_groups(cfg)) of a federated run, without importing torch (checked in the tests)."""
    return sum(g.clients for g in cfg.data.groups)


def client_id_for(cfg: RunConfig, node_config: Mapping) -> int:
    """The logical client id a node serves, from its node config (see the module docstring)."""
    n = num_clients(cfg)
    if "client-id" in node_config:
        cid = int(node_config["client-id"])
    elif "group" in node_config:
        group = node_config["group"]
        names = cfg.group_names
        if isinstance(group, str) and not group.lstrip("-").isdigit():
            if group not in names:
                raise ValueError(f"node config group={group!r}: no such group (groups: {names})")
            gi = names.index(group)
        else:
            gi = int(group)
            if not 0 <= gi < len(names):
                raise ValueError(f"node config group={group}: no such group index (0..{len(names) - 1})")
        partition = int(node_config.get("partition", node_config.get("partition-index", -1)))
        clients = cfg.data.groups[gi].clients
        if not 0 <= partition < clients:
            raise ValueError(f"node config partition={partition}: group {names[gi]!r} has partitions 0..{clients - 1}")
        cid = sum(g.clients for g in cfg.data.groups[:gi]) + partition
    elif "partition-id" in node_config:
        cid = int(node_config["partition-id"])
        total = node_config.get("num-partitions")
        if total is not None and int(total) != n:
            raise ValueError(
                f"this federation has {n} logical clients but the simulation has {total} nodes (set num-supernodes={n})"
            )
    else:
        raise ValueError("node config names no client: give group=<name> partition=<i> (or client-id=<id>)")
    if not 0 <= cid < n:
        raise ValueError(f"client id {cid} out of range: this federation has clients 0..{n - 1}")
    return cid


def locate(cfg: RunConfig, client_id: int) -> tuple[int, int]:
    """(group index, partition index) of a federated client id."""
    first = 0
    for gi, g in enumerate(cfg.data.groups):
        if client_id < first + g.clients:
            return gi, client_id - first
        first += g.clients
    raise ValueError(f"client id {client_id} out of range")


def load_client_data(cfg: RunConfig, client_id: int, data_dir: str | Path | None = None) -> ClientData:
    """Client ``client_id``'s data, loading only its own group (identical to ``build_clients``)."""
    import torch

    from fissionvae.data.federated import ClientData, iid_partition, load_group

    data_dir = data_dir if data_dir not in (None, "") else cfg.data.dir
    gi, partition = locate(cfg, client_id)
    gcfg = cfg.data.groups[gi]
    group = load_group(gcfg, gi, cfg.seed, data_dir, cfg.data.download)
    shard = iid_partition(len(group.train_images), gcfg.clients, cfg.seed, gi)[partition]
    idx = torch.from_numpy(shard)
    return ClientData(
        client_id, group.train_images[idx], group.train_labels[idx], torch.full((len(shard),), gi, dtype=torch.int64)
    )


# A process that serves several messages (Flower's simulation keeps its workers) keeps the last
# client's data and model template; a fresh process (a deployed SuperNode starts one per message)
# loads them again.
_CACHE: dict[tuple, tuple[ClientData, GenerativeModel]] = {}


def _client(
    cfg: RunConfig, config_json: str, client_id: int, data_dir: str | None, image_shape: tuple[int, ...]
) -> tuple[ClientData, GenerativeModel]:
    """The client's data and a model template, on ``train.device`` (as the in-process engine has them)."""
    import dataclasses

    import torch

    from fissionvae.models.vae import build_model

    key = (hashlib.sha256(config_json.encode()).hexdigest(), client_id, data_dir, image_shape)
    if key not in _CACHE:
        _CACHE.clear()
        device = torch.device(cfg.train.device)
        data = load_client_data(cfg, client_id, data_dir)
        data = dataclasses.replace(data, images=data.images.to(device), group_ids=data.group_ids.to(device))
        _CACHE[key] = (data, build_model(cfg, image_shape).to(device))
    return _CACHE[key]


def node_data_dir(context: Context) -> str | None:
    """The node's ``data-dir``; a simulated node (``partition-id``) also takes the run config's,
    a deployed node never does (that path is on the SuperLink's machine)."""
    sources = [context.node_config] + ([context.run_config] if "partition-id" in context.node_config else [])
    for source in sources:
        value = source.get("data-dir")
        if value not in (None, ""):
            return str(value)
    return None


app = ClientApp()


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Say which logical client this node serves (the server's node directory asks once)."""
    cfg, _ = wire.parse_query(msg.content)
    return Message(wire.identity_content(client_id_for(cfg, context.node_config), context.node_config), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the owned weights received on this node's partition; reply with the owned weights."""
    import torch

    from fissionvae.federation.client import client_update

    job = wire.parse_train(msg.content)
    mine = client_id_for(job.cfg, context.node_config)
    if mine != job.client_id:
        raise ValueError(f"this node serves client {mine}, the message is for client {job.client_id}")
    torch.set_num_threads(job.cfg.federation.threads)
    config_json = msg.content.config_records[wire.CONFIG]["run-config"]
    data, model = _client(job.cfg, str(config_json), job.client_id, node_data_dir(context), job.image_shape)
    result = client_update(model, job.weights, data, job.spec)
    return Message(wire.result_content(result), reply_to=msg)
