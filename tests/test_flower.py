"""Flower engines: wire format, strategy, reply checks, and real Flower processes on loopback.

The fast tests drive the ServerApp's pieces over an in-process fake Grid that runs our ClientApp
directly (bad replies, silent and crashing nodes, node discovery). The slow ones start Flower
for real (simulation: SuperLink + Ray + `flwr run`; deployment: SuperLink with TLS and node
authentication + one SuperNode process per client) and check bit-identical weights and metrics
against the in-process engine, a restarted ServerApp, a node killed mid-run, nodes that cannot
join, and that no process survives (by PID, and by FLWR_HOME in /proc/*/environ).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from tests.helpers import REPO, tiny_config

from fissionvae.cli import build_parser
from fissionvae.cli import main as cli_main
from fissionvae.data.federated import build_clients, client_groups, load_groups
from fissionvae.federation.client import LocalTrainSpec
from fissionvae.federation.engine import Federation, InProcessDispatcher, train
from fissionvae.federation.flower import clientapp, messages
from fissionvae.federation.flower.bindings import BindingsError, NodeBinding, add_binding, client_nodes
from fissionvae.federation.flower.commands import (
    CONNECTION,
    FlowerRunError,
    flower_env,
    flwr,
    node_configs,
    write_connection,
)
from fissionvae.federation.flower.deployment import LocalDeployment
from fissionvae.federation.flower.gate import FleetGate
from fissionvae.federation.flower.launch import FlowerOptions, train_with_flower
from fissionvae.federation.flower.processes import ProcessSet, processes_with_home
from fissionvae.federation.flower.security import (
    generate_certificates,
    generate_node_keys,
)
from fissionvae.federation.flower.serverapp import FlowerDispatcher
from fissionvae.federation.flower.strategy import GroupFedAvg, NodeDirectory
from fissionvae.runs import RunDir

TIMING = {"seconds", "samples_per_s", "steps"}


def weights_equal(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def rounds_of(run: RunDir) -> list[dict]:
    """metrics.jsonl round lines without wall-clock fields (they differ between engines)."""
    return [
        {k: v for k, v in m.items() if k not in ("seconds", "samples_per_s")}
        for m in run.metrics()
        if m["type"] == "round"
    ]


def client_lines(run: RunDir) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in run.metrics() if m["type"] == "client"]


# --------------------------------------------------------------------------- an in-process Grid


@pytest.fixture(autouse=True)
def server_identity():
    """What a ServerApp process has: Flower's task identity (Message() reads it)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class FakeGrid(Grid):
    """Delivers each message to our ClientApp in this process (node id = 1000 + client id).

    ``tamper(message, reply) -> reply | None`` may alter or drop (None: no reply ever) a reply.
    """

    def __init__(self, cfg, data_dir, tamper=None, clients=None):
        self.nodes = {
            1000 + cid: nc for cid, nc in enumerate(node_configs(cfg, data_dir)) if clients is None or cid in clients
        }
        self.tamper = tamper
        self.replies: dict[str, Message] = {}
        self._run = Run.create_empty(1)

    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages_):
        ids = []
        for msg in messages_:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            context = Context(
                run_id=1,
                node_id=msg.metadata.dst_node_id,
                node_config=self.nodes[msg.metadata.dst_node_id],
                state=RecordDict(),
                run_config={},
            )
            try:
                reply = clientapp.app(msg, context)
            except Exception as exc:  # what Flower does with a raising ClientApp
                reply = Message(Error(code=2, reason=str(exc)), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(msg, reply)
            if reply is not None:
                reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
                self.replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


# --------------------------------------------------------------------------- fast tests


def test_records_roundtrip_bit_exact():
    state = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5, dtype=torch.float64)[::2],  # non-contiguous
        "n": torch.tensor(7, dtype=torch.int64),
        "h": torch.randn(2, 2).to(torch.float16),
    }
    back = messages.record_to_state(messages.state_to_record(state))
    assert weights_equal({k: v.contiguous() for k, v in state.items()}, back)


def test_train_message_carries_spec_config_and_owned_weights(shared_data_dir):
    cfg = tiny_config(shared_data_dir)
    fed = Federation.from_config(cfg, with_clients=False)
    owned = {k: fed.model.state_dict()[k] for k in fed.owned_keys(2)}
    spec = LocalTrainSpec(seed=5, round=3, epochs=2, batch_size=16, lr=3e-4, fused_adam=False, steps=7)
    job = messages.parse_train(messages.train_content(2, owned, spec, messages.config_to_json(cfg), (1, 28, 28)))
    assert (
        job.client_id == 2
        and job.spec == spec
        and job.cfg.to_dict() == cfg.to_dict()
        and job.image_shape == (1, 28, 28)
    )
    assert weights_equal(job.weights, owned)
    assert not any(k.startswith("branches.0.") for k in job.weights)  # a fashion client never sees the mnist branch


def test_node_config_maps_to_client_ids_and_local_partitions_match(shared_data_dir):
    cfg = tiny_config(shared_data_dir)
    assert clientapp.num_clients(cfg) == len(client_groups(cfg))
    assert [clientapp.client_id_for(cfg, nc) for nc in node_configs(cfg)] == [0, 1, 2, 3]
    assert clientapp.client_id_for(cfg, {"group": "fashion", "partition": 1}) == 3
    assert clientapp.client_id_for(cfg, {"group": 1, "partition": 0}) == 2
    assert clientapp.client_id_for(cfg, {"partition-id": 2, "num-partitions": 4}) == 2
    for bad in (
        {"group": "cifar", "partition": 0},
        {"group": "mnist", "partition": 2},
        {"partition-id": 1, "num-partitions": 3},
        {},
    ):
        with pytest.raises(ValueError):
            clientapp.client_id_for(cfg, bad)
    reference = build_clients(cfg, load_groups(cfg))
    for ref in reference:
        local = clientapp.load_client_data(cfg, ref.client_id)
        assert (
            local.client_id == ref.client_id
            and torch.equal(local.images, ref.images)
            and torch.equal(local.labels, ref.labels)
            and torch.equal(local.group_ids, ref.group_ids)
        )


def test_strategy_start_matches_the_inprocess_engine(tmp_path, shared_data_dir):
    """GroupFedAvg used the plain-Flower way (Strategy.start) gives the engine's weights."""
    cfg = tiny_config(shared_data_dir, train={"rounds": 2})
    ref = train(cfg, RunDir.create(tmp_path, cfg, "ref"), progress=False)
    fed = Federation.from_config(cfg, with_clients=False)
    grid = FakeGrid(cfg, None)
    strategy = GroupFedAvg(fed, NodeDirectory(grid, fed, poll_interval=0.01))
    result = strategy.start(grid, messages.state_to_record(fed.initial_state().weights), num_rounds=2)
    assert weights_equal(messages.record_to_state(result.arrays), ref.weights)
    assert weights_equal(strategy.weights, ref.weights)


@pytest.mark.parametrize(
    "privacy",
    [
        {"mode": "record", "noise_multiplier": 1.0, "delta": 1e-5, "clip_norm": 1.0},
        {"mode": "client", "target_epsilon": 8.0, "delta": 1e-5, "clip_norm": 5.0},
    ],
    ids=["record", "client"],
)
def test_private_rounds_on_flower_match_the_inprocess_engine(tmp_path, shared_data_dir, privacy):
    """Both DP modes through the ClientApp (the spec carries DP-SGD's settings) and the strategy."""
    cfg = tiny_config(shared_data_dir, train={"rounds": 2}, privacy=privacy)
    ref = train(cfg, RunDir.create(tmp_path, cfg, "ref"), progress=False)
    fed = Federation.from_config(cfg, with_clients=False)
    grid = FakeGrid(cfg, None)
    strategy = GroupFedAvg(fed, NodeDirectory(grid, fed, poll_interval=0.01))
    result = strategy.start(grid, messages.state_to_record(fed.initial_state().weights), num_rounds=2)
    assert weights_equal(messages.record_to_state(result.arrays), ref.weights)


def _tamper_by_round(plan):
    """plan: {(round, client): action}; actions alter the reply of that client in that round."""

    def tamper(msg, reply):
        rnd = int(msg.metadata.group_id or 0)
        if msg.metadata.message_type != "train":
            return reply
        cid = int(msg.content.config_records["config"]["client-id"])
        action = plan.get((rnd, cid))
        if action is None:
            return reply
        if action == "silent":
            return None
        if action == "error":
            return Message(Error(code=2, reason="ClientApp crashed (test)"), reply_to=msg)
        if isinstance(action, tuple):  # (record, key, value): a crafted meta or metric entry
            record, key, value = action
            reply.content[record][key] = value
            return reply
        arrays = reply.content.array_records["arrays"]
        state = messages.record_to_state(arrays)
        key = sorted(state)[0]
        if action == "nan":
            state[key] = state[key].clone()
            state[key].view(-1)[0] = float("nan")
        elif action == "dtype":
            state[key] = state[key].double()
        elif action == "shape":
            state[key] = state[key][:-1]
        elif action == "missing-key":
            del state[key]
        elif action == "extra-key":
            state["branches.9.weight"] = torch.zeros(1)
        elif action == "unreadable":
            del reply.content["meta"]
            return reply
        reply.content["arrays"] = messages.state_to_record(state)
        return reply

    return tamper


def test_bad_and_missing_replies_are_rejected_logged_and_never_averaged(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0}, train={"rounds": 3})
    run = RunDir.create(tmp_path, cfg, "faulty")
    fed = Federation.from_config(cfg, with_clients=False)
    initial = fed.initial_state().weights
    plan = {
        (1, 1): "nan",
        (1, 2): "dtype",
        (1, 3): "shape",  # round 1: only client 0 (mnist) is valid
        (2, 0): "missing-key",
        (2, 1): "extra-key",
        (2, 2): "error",
        (2, 3): "silent",  # round 2: nothing valid
        (3, 1): "unreadable",
    }
    grid = FakeGrid(cfg, None, tamper=_tamper_by_round(plan))
    strategy = GroupFedAvg(fed, NodeDirectory(grid, fed, poll_interval=0.01))
    dispatch = FlowerDispatcher(grid, strategy, round_timeout=0.3, poll_interval=0.05, log_dir=run.path / "flower")
    states = [train(cfg, run, max_rounds=1, progress=False, federation=fed, dispatch=dispatch) for _ in range(3)]
    rounds = [m for m in run.metrics() if m["type"] == "round"]
    reasons = {r["round"]: {x["client"]: x["reason"] for x in r["rejected"]} for r in rounds}
    assert rounds[0]["clients"] == [0] and set(reasons[1]) == {1, 2, 3}
    assert "non-finite" in reasons[1][1] and "float64" in reasons[1][2] and "expected" in reasons[1][3]
    # round 1: the fashion group sent nothing valid -> its branch keeps its weights; mnist's moved
    w1 = states[0].weights
    assert all(torch.equal(w1[k], initial[k]) for k in w1 if k.startswith("branches.1."))
    assert not all(torch.equal(w1[k], initial[k]) for k in w1 if k.startswith("branches.0."))
    # round 2: wrong keys rejected, an error reply and a silent node are missing; weights unchanged
    assert rounds[1]["clients"] == [] and set(reasons[2]) == {0, 1} and "keys differ" in reasons[2][0]
    assert rounds[1]["missing"] == [2, 3] and rounds[1]["empty"] is True
    assert weights_equal(states[1].weights, w1)
    assert rounds[2]["clients"] == [0, 2, 3] and "unreadable reply" in reasons[3][1]
    exchanges = [json.loads(line) for line in (run.path / "flower" / "exchanges.jsonl").read_text().splitlines()]
    assert [e["client"] for e in exchanges[1]["errors"]] == [2] and exchanges[1]["timed_out"] == [3]
    assert "crashed" in exchanges[1]["errors"][0]["reason"]


def test_crafted_counts_and_metrics_are_rejected_and_the_server_counts_are_used(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0}, train={"rounds": 1})
    run = RunDir.create(tmp_path, cfg, "crafted")
    fed = Federation.from_config(cfg, with_clients=False)
    plan = {
        (1, 1): ("meta", "num-examples", 10**400),  # 400 digits: crashed the server before
        (1, 2): ("meta", "num-examples", "12"),
        (1, 3): ("metrics", "loss", float("nan")),
    }
    grid = FakeGrid(cfg, None, tamper=_tamper_by_round(plan))
    strategy = GroupFedAvg(fed, NodeDirectory(grid, fed, poll_interval=0.01))
    state = train(cfg, run, progress=False, federation=fed, dispatch=FlowerDispatcher(grid, strategy, 1.0, 0.05))
    (summary,) = [m for m in run.metrics() if m["type"] == "round"]
    reasons = {x["client"]: x["reason"] for x in summary["rejected"]}
    assert summary["clients"] == [0] and not summary["failed"] and sorted(reasons) == [1, 2, 3]
    assert "positive int" in reasons[1] and "'12'" in reasons[2] and "not a finite number" in reasons[3]
    (line,) = [m for m in run.metrics() if m["type"] == "client"]
    assert line["num_samples"] == fed.client_sizes[0] == 200
    initial = fed.initial_state().weights  # only client 0 (mnist) counted: the fashion branch is untouched
    assert all(torch.equal(state.weights[k], initial[k]) for k in initial if k.startswith("branches.1."))


def test_a_client_without_a_node_is_missing_and_its_group_branch_kept(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0}, train={"rounds": 1})
    run = RunDir.create(tmp_path, cfg, "nonode")
    fed = Federation.from_config(cfg, with_clients=False)
    grid = FakeGrid(cfg, None, clients=[0, 1])  # nobody serves the fashion clients
    strategy = GroupFedAvg(fed, NodeDirectory(grid, fed, poll_interval=0.01))
    state = train(
        cfg,
        run,
        progress=False,
        federation=fed,
        dispatch=FlowerDispatcher(grid, strategy, 1.0, 0.05, run.path / "flower"),
    )
    (round1,) = [m for m in run.metrics() if m["type"] == "round"]
    assert round1["clients"] == [0, 1] and round1["missing"] == [2, 3]
    initial = fed.initial_state().weights
    assert all(torch.equal(state.weights[k], initial[k]) for k in initial if k.startswith("branches.1."))
    assert json.loads((run.path / "flower" / "nodes.json").read_text()).keys() == {"0", "1"}


def test_node_directory_restores_answers_and_never_stalls_rounds_on_a_silent_node(shared_data_dir):
    cfg = tiny_config(shared_data_dir)
    fed = Federation.from_config(cfg, with_clients=False)
    silent = {1003}  # the node of client 3 takes queries but never answers

    def drop_queries(msg, reply):
        return None if msg.metadata.dst_node_id in silent else reply

    grid = FakeGrid(cfg, None, tamper=drop_queries)
    directory = NodeDirectory(grid, fed, poll_interval=0.01, query_timeout=1.0)
    t = time.monotonic()
    assert directory.refresh(range(4), wait=0.1) == [3]  # waits for the fresh query only up to query_timeout
    assert 0.95 < time.monotonic() - t < 5.0
    t = time.monotonic()
    assert directory.refresh([0, 3]) == [3]  # asked again, but a node that let a query expire is not waited for
    assert time.monotonic() - t < 0.6 and len(directory.pending) == 1
    silent.clear()  # it answers from now on: once its pending query expires it is asked again and found
    time.sleep(1.05)
    assert [directory.refresh([0, 3]) for _ in range(3)] == [[3], [3], []] and directory.node_of(3) == 1003
    saved = directory.as_json()
    assert sorted(saved) == ["0", "1", "2", "3"] and saved["2"]["node_config"] == {"group": "fashion", "partition": 0}

    # a restarted ServerApp reuses the answers of nodes still online and asks no one again
    del grid.nodes[1001]  # client 1's node left
    again = NodeDirectory(grid, fed, poll_interval=0.01)
    assert again.restore(saved) == [0, 2, 3]
    pushed = []
    grid.push_messages = lambda msgs, push=grid.push_messages: pushed.extend(msgs) or push(msgs)
    assert again.refresh([0, 1, 2]) == [1] and pushed == [] and again.node_of(2) == 1002


def test_node_bindings_give_each_client_to_one_registered_node(tmp_path, shared_data_dir):
    """The operator's bindings file: validated, no client or key twice, and the node directory
    accepts a claim to a client only from the node bound to it (not first come, first served)."""
    cfg = tiny_config(shared_data_dir)  # mnist 0-1, fashion 0-1: clients 0-3
    path = tmp_path / "bindings.json"
    key = "ecdsa-sha2-nistp384 AAAA{}"
    add_binding(path, NodeBinding({"group": "mnist", "partition": 0}, 1000, key.format(0)))
    add_binding(path, NodeBinding({"group": "fashion", "partition": 1}, 1003, key.format(3)))
    before = path.read_bytes()
    for clash in (
        NodeBinding({"group": "mnist", "partition": 0}, 1005, key.format(5)),  # client taken
        NodeBinding({"group": "mnist", "partition": 1}, 1005, key.format(0)),  # key taken
    ):
        with pytest.raises(BindingsError, match="already bound"):
            add_binding(path, clash)
    assert path.read_bytes() == before  # nothing half-written
    assert client_nodes(path, cfg, clientapp.client_id_for) == {0: 1000, 3: 1003}
    for text, message in (
        ("{", "not a node-bindings file"),
        ('{"version": 2, "bindings": []}', "version 1"),
        (
            '{"version": 1, "bindings": [{"node-config": {"group": "mnist"}, "node-id": -1, "public-key": "x"}]}',
            "node-id",
        ),
        (
            '{"version": 1, "bindings": [{"node-config": {"group": "dogs", "partition": 0}, "node-id": 7, '
            '"public-key": "ecdsa-sha2-nistp384 A"}]}',
            "no such group",
        ),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(BindingsError, match=message) as err:
            client_nodes(bad, cfg, clientapp.client_id_for)
        assert str(bad) in str(err.value)

    fed = Federation.from_config(cfg, with_clients=False)
    directory = NodeDirectory(FakeGrid(cfg, None), fed, poll_interval=0.01, bindings={0: 1000, 3: 1003})
    directory._register(1001, 0, {"group": "mnist", "partition": 0})  # another node claims client 0 first
    directory._register(1002, 2, {"group": "fashion", "partition": 0})  # a client bound to no node
    directory._register(1000, 0, {"group": "mnist", "partition": 0})
    assert directory.node_of_client == {0: 1000}


def test_fleet_gate_forwards_the_fleet_api_and_refuses_the_control_api():
    """The SuperLink's public address (the gate) forwards POST /v1/fleet/<name> and GET /health
    only; control and runtime API requests never reach the SuperLink."""
    seen = []

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    gate = FleetGate(("127.0.0.1", 0), upstream.server_address[:2], None, None)
    for server in (upstream, gate):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = gate.server_address[:2]

        def call(method, path, body=b"x"):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request(method, path, body=body)
            res = conn.getresponse()
            return res.status, res.read()

        assert call("POST", "/v1/fleet/pull-messages", b"payload") == (200, b"payload")
        for method, path in (
            ("POST", "/v1/control/register-node"),
            ("POST", "/v1/control/start-run"),
            ("POST", "/v1/runtime/pull-messages"),
            ("POST", "/v1/fleet/../control/register-node"),
            ("POST", "/v1/fleet/pull-messages?x=1"),
            ("PUT", "/v1/fleet/pull-messages"),
            ("GET", "/v1/control/list-runs"),
        ):
            assert call(method, path)[0] == 403, path
        assert seen == ["/v1/fleet/pull-messages"]
    finally:
        for server in (upstream, gate):
            server.shutdown()
            server.server_close()


def test_flower_engines_refuse_client_state_configs_before_writing(tmp_path, shared_data_dir):
    from fissionvae.federation.flower.launch import check_flower_config

    check_flower_config(tiny_config(shared_data_dir))
    for sections in ({"mode": "centralized"}, {"federation": {"client_optimizer": "keep"}}):
        with pytest.raises(ValueError, match="inprocess"):
            check_flower_config(tiny_config(shared_data_dir, **sections))
    config = tmp_path / "keep.yaml"
    config.write_text(f"extends: {REPO / 'configs/mixed_mnist/quick.yaml'}\nfederation: {{client_optimizer: keep}}\n")
    assert (
        cli_main(["train", "--config", str(config), "--engine", "flower-sim", "--runs-dir", str(tmp_path / "runs")])
        == 2
    )
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- real Flower processes


def _assert_no_survivors(procs: ProcessSet, *homes: Path) -> None:
    assert procs.seen_pids, "no process was recorded"
    deadline = time.monotonic() + 10
    while (procs.alive() or any(processes_with_home(h) for h in homes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.alive() == [], f"processes still running: {procs.alive()}"
    for home in homes:
        assert processes_with_home(home) == [], f"processes with FLWR_HOME under {home} still running"


def three_clients(data_dir, **sections):
    """Two MNIST clients and one FashionMNIST client: few processes for the deployment.

    With seed 17 and participation 0.5 the rounds draw clients [0, 2], [0, 1, 2], [1, 2].
    """
    groups = [
        {"name": "mnist", "dataset": "mnist", "clients": 2, "train_size": 400, "test_size": 200},
        {"name": "fashion", "dataset": "fashion-mnist", "clients": 1, "train_size": 200, "test_size": 200},
    ]
    return tiny_config(data_dir, seed=17, data={"groups": groups}, **sections)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data_dir):
    """The in-process engine's run of the 3-round federation: weights after round 2, and after
    round 3 in which client 2's reply never arrives (its SuperNode dies in the deployment test)."""
    cfg = three_clients(shared_data_dir, train={"rounds": 3})
    run = RunDir.create(tmp_path_factory.mktemp("reference"), cfg, "inprocess")
    two = train(cfg, run, max_rounds=2, progress=False)
    fed = Federation.from_config(cfg)
    inner = InProcessDispatcher(fed)

    def client_2_lost_in_round_3(weights, round_index, participants, spec, client_states):
        kept = [c for c in participants if (round_index, c) != (2, 2)]
        return inner(weights, round_index, kept, spec, client_states)

    three = train(cfg, run, federation=fed, dispatch=client_2_lost_in_round_3, progress=False)
    assert [r["clients"] for r in rounds_of(run)] == [[0, 2], [0, 1, 2], [1]] and rounds_of(run)[2]["missing"] == [2]
    return SimpleNamespace(cfg=cfg, run=run, two=two.weights, three=three.weights)


@pytest.mark.slow
def test_flower_simulation_is_bit_identical_to_inprocess(tmp_path, reference):
    """`--engine flower-sim`: a simulation SuperLink, Ray, `flwr run`, all started and stopped here."""
    run = RunDir.create(tmp_path, reference.cfg, "flower-sim")
    procs = ProcessSet()
    state = train_with_flower(
        reference.cfg, run, "flower-sim", max_rounds=2, options=FlowerOptions(echo=False), processes=procs
    )
    _assert_no_survivors(procs, run.path / "flower")
    assert state.round == 2 and weights_equal(state.weights, reference.two)
    assert (
        rounds_of(run) == rounds_of(reference.run)[:2] and client_lines(run) == client_lines(reference.run)[: 2 + 3]
    )  # rounds 1-2: 2 + 3 clients
    assert json.loads(run.status_path.read_text())["state"] == "stopped"  # resumable, like --max-rounds in-process
    assert sorted(p.name for p in run.images_dir.iterdir()) == sorted(
        p.name for p in reference.run.images_dir.iterdir()
    )
    assert (run.path / "flower" / "home" / "config.toml").is_file()  # FLWR_HOME inside the run folder
    assert sorted(json.loads((run.path / "flower" / "nodes.json").read_text())) == ["0", "1", "2"]


@pytest.mark.slow
def test_deployment_over_tls_with_node_auth_resumes_and_survives_a_dead_node(tmp_path, reference):
    """A loopback deployment as real processes: SuperLink with TLS and node authentication, one
    SuperNode per client (keys registered), plus a node with an unregistered key and one without
    the CA certificate, which cannot join. A first ServerApp trains round 1; a restarted one
    resumes from the checkpoint and trains rounds 2 and 3; client 2's node is killed (SIGKILL)
    once round 2 is checkpointed, so round 3 aggregates what arrived before the timeout. Every
    round equals the in-process engine's, bit for bit (round 3: the in-process run without client
    2's reply)."""
    cfg = reference.cfg
    tls = generate_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    keys = {label: generate_node_keys(tmp_path / "keys", f"node-{label}") for label in ("0", "1", "2", "intruder")}
    run = RunDir.create(tmp_path, cfg, "flower")
    dep = LocalDeployment(cfg, tmp_path / "deployment", tls=tls, node_auth=True)
    after_round_2 = {}

    def kill_client_2_after_round_2():
        while json.loads(run.status_path.read_text())["rounds_done"] < 2:
            time.sleep(0.05)
        after_round_2["state"] = run.load_state()
        dep.kill_node(2, hard=True)

    try:
        dep.start(start_nodes=False)
        with ThreadPoolExecutor(3) as pool:  # `flwr supernode register`, one process per key, bound to its client
            assert all(pool.map(dep.register_node, [keys[str(c)][1] for c in range(3)], range(3)))
        for cid in range(3):
            dep.start_node(cid, auth_private_key=keys[str(cid)][0])
        intruder = dep.start_node(0, auth_private_key=keys["intruder"][0], label="intruder")
        plain = dep.start_node(0, label="plain-http", trust_ca=False, max_retries=1)
        with pytest.raises((OSError, http.client.HTTPException)):  # the SuperLink speaks HTTPS only
            urllib.request.urlopen(f"http://{dep.address}/health", timeout=10)

        opts = FlowerOptions(
            echo=False, node_wait=120, round_timeout=90, root_certificates=tls.ca_cert, node_bindings=dep.bindings_path
        )
        first = train_with_flower(cfg, run, "flower", dep.control_address, max_rounds=1, options=opts)
        assert first.round == 1 and json.loads(run.status_path.read_text())["state"] == "stopped"
        killer = threading.Thread(target=kill_client_2_after_round_2, daemon=True)
        killer.start()
        final = train_with_flower(cfg, run, "flower", dep.control_address, options=opts)
        killer.join(5)
        for node in (intruder, plain):
            node.popen.wait(30)
        assert dep.nodes["0"].running() and dep.nodes["1"].running()
    finally:
        dep.stop()
    _assert_no_survivors(dep.procs, tmp_path / "deployment", run.path / "flower")

    assert intruder.popen.returncode not in (0, None) and "Failed to activate SuperNode" in intruder.log_tail()
    assert (
        plain.popen.returncode not in (0, None) and "Exit Code: 303" not in plain.log_tail()
    )  # connection failed (303: a local config error)
    assert weights_equal(after_round_2["state"].weights, reference.two)
    assert final.round == 3 and weights_equal(final.weights, reference.three)
    assert rounds_of(run) == rounds_of(reference.run) and client_lines(run) == client_lines(reference.run)
    exchanges = [json.loads(line) for line in (run.path / "flower" / "exchanges.jsonl").read_text().splitlines()]
    assert exchanges[2]["participants"] == [1, 2] and exchanges[2]["replied"] == [1]
    assert exchanges[2]["timed_out"] + exchanges[2]["no_node"] + [e["client"] for e in exchanges[2]["errors"]] == [2]
    fashion = [k for k in final.weights if k.startswith("branches.1.")]
    assert fashion and all(
        torch.equal(final.weights[k], reference.two[k]) for k in fashion
    )  # its only client sent nothing
    log = (run.path / "flower" / "serverapp.log").read_text()
    assert "3 SuperNode(s) of the previous ServerApp still online" in log  # the restarted ServerApp asked no one again
    assert json.loads(run.status_path.read_text())["state"] == "finished"


#: Installed on one node through PYTHONPATH: its ClientApps claim 10**12 training examples.
CRAFTED_COUNT = """
import os, sys
if os.path.basename(sys.argv[0]).startswith("flwr-clientapp"):
    from fissionvae.federation.flower import messages

    honest = messages.result_content

    def crafted(result):
        content = honest(result)
        content["metrics"]["num-examples"] = 10**12
        content["meta"]["num-examples"] = 10**12
        return content

    messages.result_content = crafted
"""


@pytest.fixture(scope="module")
def round_one(tmp_path_factory, shared_data_dir):
    """In-process round 1 of the 3-client federation (clients 0 and 2 draw), with and without client 2's reply."""
    cfg = three_clients(shared_data_dir, train={"rounds": 2})
    out = {}
    for name, lost in (("all", ()), ("without_2", (2,))):
        run = RunDir.create(tmp_path_factory.mktemp("round-one"), cfg, name)
        fed = Federation.from_config(cfg)
        inner = InProcessDispatcher(fed)

        def dispatch(weights, round_index, participants, spec, client_states, _lost=lost, _inner=inner):
            return _inner(weights, round_index, [c for c in participants if c not in _lost], spec, client_states)

        out[name] = train(cfg, run, federation=fed, dispatch=dispatch, max_rounds=1, progress=False).weights
    return SimpleNamespace(cfg=cfg, **out)


def _serverapps(home: Path) -> list[int]:
    """Living flwr-serverapp processes started under ``home`` (by FLWR_HOME)."""
    out = []
    for pid in processes_with_home(home):
        with contextlib.suppress(OSError):
            if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
    return out


@pytest.mark.slow
def test_deployment_attacks_registration_identity_crafted_count_and_superlink_crash(tmp_path, round_one):
    """A TLS deployment with node authentication and node bindings, under attack:

    - a party holding only ca.crt cannot register a key (the control API is not on the nodes'
      address: the gate answers 403) and a node with an unregistered key is refused;
    - a registered key that is not bound to client 0 cannot take client 0 (its claim is refused;
      client 0's own node serves it);
    - a node whose replies claim 10**12 examples does not crash the run and its count has no
      effect (needs the robust-aggregation change: the server's own counts);
    - the SuperLink is SIGKILLed after round 1: `train` fails with one sentence and no
      flwr-serverapp outlives it.
    """
    cfg = round_one.cfg
    tls = generate_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    keys = {label: generate_node_keys(tmp_path / "keys", label) for label in ("0", "1", "2", "thief", "intruder")}
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "sitecustomize.py").write_text(CRAFTED_COUNT)
    run = RunDir.create(tmp_path, cfg, "attacked")
    dep = LocalDeployment(cfg, tmp_path / "deployment", tls=tls, node_auth=True)
    outcome: dict = {}

    def crash_superlink_after_round_1():
        while not run.status_path.is_file() or json.loads(run.status_path.read_text())["rounds_done"] < 1:
            time.sleep(0.05)
        outcome["serverapps"] = _serverapps(tmp_path / "deployment")
        os.kill(dep.superlink.pid, signal.SIGKILL)  # the SuperLink alone, as a crash

    try:
        dep.start(start_nodes=False)
        # only ca.crt: the public address refuses the control API, whatever the client
        outsider = tmp_path / "outsider"
        write_connection(outsider, dep.address, tls.ca_cert)
        res = flwr(["supernode", "register", str(keys["intruder"][1]), CONNECTION], flower_env(outsider))
        assert res.returncode != 0
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        for path in ("/v1/control/register-node", "/v1/control/start-run", "/v1/runtime/pull-messages"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    urllib.request.Request(f"https://{dep.address}{path}", b"", method="POST"), context=context
                )
            assert refused.value.code == 403
        # the operator, on the SuperLink's machine: three bound keys and one spare, unbound
        bound = [dep.register_node(keys[str(c)][1], c) for c in range(3)]
        spare = dep.register_node(keys["thief"][1])
        thief = dep.start_node(0, auth_private_key=keys["thief"][0], label="thief")  # claims client 0
        time.sleep(5)  # joins first: first come would be first served
        dep.start_node(0, auth_private_key=keys["0"][0])
        dep.start_node(1, auth_private_key=keys["1"][0])
        dep.start_node(2, auth_private_key=keys["2"][0], env_extra={"PYTHONPATH": str(crafted)})
        intruder = dep.start_node(1, auth_private_key=keys["intruder"][0], label="intruder")

        killer = threading.Thread(target=crash_superlink_after_round_1, daemon=True)
        killer.start()
        opts = FlowerOptions(
            echo=False, node_wait=120, round_timeout=120, root_certificates=tls.ca_cert, node_bindings=dep.bindings_path
        )
        with pytest.raises(FlowerRunError) as failed:
            train_with_flower(cfg, run, "flower", dep.control_address, options=opts)
        killer.join(5)
        outcome["after"] = _serverapps(tmp_path / "deployment")
        intruder.popen.wait(60)
        assert thief.running()  # admitted by Flower (its key is registered) but never given a client
    finally:
        dep.stop()
    _assert_no_survivors(dep.procs, tmp_path / "deployment", run.path / "flower")

    message = str(failed.value)
    assert "\n" not in message and "stopped answering" in message and "1 of 2 rounds" in message, message
    assert outcome["serverapps"] and outcome["after"] == [], outcome  # the run's ServerApp did not outlive `train`
    assert intruder.popen.returncode == 1 and "Failed to activate SuperNode" in intruder.log_tail()
    # The thief's refusal is logged by the ServerApp, but that log reaches serverapp.log through
    # Flower's log stream, which the SuperLink crash cuts at a moment that varies from run to run;
    # nodes.json (what the ServerApp served) is the reliable record. The NodeDirectory's
    # refusal (node_of_client) is checked in test_node_bindings_give_each_client_to_one_registered_node.
    served = {int(c): e["node"] for c, e in json.loads((run.path / "flower" / "nodes.json").read_text()).items()}
    assert served == dict(enumerate(bound)) and spare not in served.values()
    state = run.load_state()
    assert state.round == 1 and all(torch.isfinite(v).all() for v in state.weights.values() if v.is_floating_point())
    # Needs the robust-aggregation change (the server's own sample counts; a reply claiming another
    # count rejected): client 2's claim of 10**12 examples must not weigh in.
    assert weights_equal(state.weights, round_one.all) or weights_equal(state.weights, round_one.without_2)


# --------------------------------------------------------------------------- command line


def test_flower_commands_parse_and_write_certificates_and_keys(tmp_path, capsys):
    from fissionvae.federation.flower import cli as flower_cli

    parser = build_parser()
    args = parser.parse_args(
        ["flower", "supernode", "--superlink", "10.0.0.5:8000", "--group", "fashion", "--partition", "3", "--insecure"]
    )
    assert (
        args.func is flower_cli.cmd_supernode and args.group == "fashion" and args.partition == 3 and args.port == 9094
    )
    args = parser.parse_args(
        ["train", "--config", "x.yaml", "--engine", "flower", "--superlink", "127.0.0.1:8000", "--round-timeout", "60"]
    )
    assert (
        args.engine == "flower"
        and args.superlink == "127.0.0.1:8000"
        and args.round_timeout == 60.0
        and args.node_wait is None
    )
    assert parser.parse_args(["train", "--config", "x.yaml"]).engine == "inprocess"

    assert cli_main(["flower", "certs", "--out", str(tmp_path / "c"), "--host", "127.0.0.1"]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"ca.crt", "ca.key", "server.pem", "server.key"}
    assert cli_main(["flower", "keys", "--out", str(tmp_path / "k"), "--name", "mnist-0"]) == 0
    assert (tmp_path / "k" / "mnist-0.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert (tmp_path / "k" / "mnist-0").stat().st_mode & 0o077 == 0

    # refused before anything starts or is written, with the option named
    runs = tmp_path / "runs"
    for argv, message in (
        (["train", "--config", "x.yaml", "--engine", "flower"], "--superlink"),
        (["train", "--config", "x.yaml", "--superlink", "h:1"], "--superlink"),
        (["train", "--config", "x.yaml", "--engine", "flower-sim", "--superlink", "h:1"], "--superlink"),
        (["flower", "superlink"], "--insecure"),
        (["flower", "supernode", "--superlink", "h:1", "--group", "mnist", "--insecure"], "--partition"),
    ):
        capsys.readouterr()
        assert cli_main([*argv, "--runs-dir", str(runs)] if argv[0] == "train" else argv) == 2
        assert message in capsys.readouterr().err
    assert not runs.exists()

    # node bindings: a bad file stops `train` before the run folder exists; a taken client or key
    # stops `register` before Flower is asked (exit 2, not Flower's failure 1)
    bad = tmp_path / "bindings.json"
    bad.write_text(
        '{"version": 1, "bindings": [{"node-config": {"group": "dogs", "partition": 0}, '
        '"node-id": 7, "public-key": "ecdsa-sha2-nistp384 AAAA"}]}'
    )
    quick = str(REPO / "configs/mixed_mnist/quick.yaml")
    capsys.readouterr()
    argv = ["train", "--config", quick, "--engine", "flower", "--superlink", "127.0.0.1:1", "--node-bindings", str(bad)]
    assert cli_main([*argv, "--runs-dir", str(runs)]) == 2
    assert str(bad) in capsys.readouterr().err and not runs.exists()
    taken = tmp_path / "taken.json"
    add_binding(taken, NodeBinding({"group": "mnist", "partition": 0}, 7, "ecdsa-sha2-nistp384 AAAA"))
    pub = tmp_path / "k" / "mnist-0.pub"
    for client in (["--group", "mnist", "--partition", "0"], ["--group", "mnist", "--partition", "1"]):
        if client[-1] == "1":
            taken.write_text(taken.read_text().replace("ecdsa-sha2-nistp384 AAAA", pub.read_text().strip()))
        register = ["flower", "register", str(pub), "--superlink", "127.0.0.1:1", "--insecure", "--home"]
        assert cli_main([*register, str(tmp_path / "h"), *client, "--bindings", str(taken)]) == 2
        assert "already bound" in capsys.readouterr().err
