"""Node bindings: which registered SuperNode may serve which logical client (the operator's file).

A SuperNode says which client it serves from its own node config (``group=mnist partition=3``);
on its own that is first come, first served. The operator therefore binds each node config to
the public key it registered (``fissionvae flower register KEY.pub --group mnist --partition 3
--bindings FILE``), and Flower's node authentication ties that key to one node id. The
ServerApp (``fissionvae train --engine flower --node-bindings FILE``) accepts a node's claim to a
client only from the node id bound to it; any other node claiming it is refused and logged.

The file (JSON, written atomically)::

    {"version": 1, "bindings": [{"node-config": {"group": "mnist", "partition": 3},
                                  "node-id": 123456, "public-key": "ecdsa-sha2-nistp384 AAAA..."}]}

This module does not import ``flwr``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.io import atomic_write_json

VERSION = 1


class BindingsError(ValueError):
    """A node-bindings file that cannot be used (the message names the file)."""


@dataclass(frozen=True)
class NodeBinding:
    """One registered key: the node config it may serve, its Flower node id and the key itself."""

    node_config: dict
    node_id: int
    public_key: str

    def as_json(self) -> dict:
        return {"node-config": self.node_config, "node-id": self.node_id, "public-key": self.public_key}


def _binding(path: Path, i: int, item: object) -> NodeBinding:
    if not isinstance(item, Mapping) or set(item) != {"node-config", "node-id", "public-key"}:
        raise BindingsError(f"{path}: binding {i} must have exactly node-config, node-id and public-key")
    config, node_id, key = item["node-config"], item["node-id"], item["public-key"]
    if not isinstance(config, Mapping) or not config or not all(isinstance(k, str) for k in config):
        raise BindingsError(f"{path}: binding {i}: node-config must be a non-empty table")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in config.values()):
        raise BindingsError(f"{path}: binding {i}: node-config values must be strings or integers")
    if not isinstance(node_id, int) or isinstance(node_id, bool) or node_id <= 0:
        raise BindingsError(f"{path}: binding {i}: node-id must be a positive integer")
    if not isinstance(key, str) or not key.startswith("ecdsa-sha2-"):
        raise BindingsError(f"{path}: binding {i}: public-key must be an OpenSSH ECDSA public key")
    return NodeBinding(dict(config), node_id, key.strip())


def read_bindings(path: str | Path) -> list[NodeBinding]:
    """The bindings in ``path``, validated (no node config, node id or key twice)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BindingsError(f"{path}: node-bindings file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BindingsError(f"{path}: not a node-bindings file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("version") != VERSION or not isinstance(raw.get("bindings"), list):
        raise BindingsError(f"{path}: not a node-bindings file (expected version {VERSION} and a bindings list)")
    out = [_binding(path, i, item) for i, item in enumerate(raw["bindings"])]
    for what, values in (
        ("node-config", [json.dumps(b.node_config, sort_keys=True) for b in out]),
        ("node-id", [str(b.node_id) for b in out]),
        ("public-key", [b.public_key for b in out]),
    ):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise BindingsError(f"{path}: {what} bound twice: {twice[0]}")
    return out


def add_binding(path: str | Path, binding: NodeBinding) -> Path:
    """Add ``binding`` to the file (created if absent); refuses a node config or key that is already bound."""
    path = Path(path)
    existing = read_bindings(path) if path.exists() else []
    for b in existing:
        if b.node_config == binding.node_config:
            raise BindingsError(f"{path}: {binding.node_config} is already bound to node {b.node_id}")
        if b.public_key == binding.public_key:
            raise BindingsError(f"{path}: this key is already bound to {b.node_config}")
    items = [b.as_json() for b in [*existing, binding]]
    return atomic_write_json(path, {"version": VERSION, "bindings": items})


def client_nodes(
    path: str | Path, cfg: RunConfig, client_id_for: Callable[[RunConfig, Mapping], int]
) -> dict[int, int]:
    """Logical client id -> the node id bound to it, for ``cfg``'s federation (errors name the file)."""
    out: dict[int, int] = {}
    for b in read_bindings(path):
        try:
            cid = client_id_for(cfg, b.node_config)
        except ValueError as exc:
            raise BindingsError(f"{path}: node {b.node_id}: {exc}") from None
        if cid in out:
            raise BindingsError(f"{path}: client {cid} is bound to nodes {out[cid]} and {b.node_id}")
        out[cid] = b.node_id
    return out
