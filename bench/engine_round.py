"""One Mixed MNIST round at the paper's settings: in-process engine vs Flower simulation vs
a loopback Flower deployment, in one run.

The work: ``configs/mixed_mnist/fission_ld.yaml`` (20 clients, 6,000 images each, Bernoulli(0.5)
participation, 5 local epochs, batch 32, the 784-512-256-16 MLP VAE with two decoder branches)
with the first seed whose round 1 draws exactly 10 clients, so every engine trains
10 clients x 5 epochs x 6,000 images = 300,000 samples. ``--scale s`` uses s x the training
images (6,000 s per client) for a quick run.

Engines (``--engines``, in this order by default):

- ``inprocess``: the embedded engine (``fissionvae train``), clients one after another, 1 thread.
- ``flower-sim-1cpu``: ``--engine flower-sim`` with Ray limited to 1 CPU (one simulated client at
  a time): the same work on the same compute as ``inprocess``.
- ``flower-sim``: ``--engine flower-sim`` with 1 CPU per simulated client and all cores.
- ``flower``: a loopback deployment (a SuperLink and SuperNodes as real processes),
  ``--engine flower --superlink 127.0.0.1:PORT``. By default only the round's 10 participants
  get a SuperNode (``--all-nodes``: all 20; an idle SuperNode polls, which costs CPU on a small
  machine hosting them all).
- ``flower-overhead``: the same deployment and cohort, each client training one batch
  (32 images, 1 epoch): the round time is Flower's fixed per-round cost here (polling, one
  ClientApp process per message that imports torch and loads its partition, transfers).
- ``flower-latency``: a separate loopback deployment of two SuperNodes (one client per group),
  each training one batch, 2 rounds: the per-round floor of Flower's deployment runtime
  (polling intervals and one ClientApp process start) when the CPUs are not the bottleneck.

Per engine: the round's wall time as the engine's metrics.jsonl records it (dispatch to
aggregate: what a round costs), samples/s over that, the clients' own training time, the
command's total wall time (process start-up, node discovery, evaluation, artifacts, shutdown)
and the CPU seconds all its processes used, sampled from /proc (the in-process engine runs as
its own process too; for the deployment, the SuperLink's and SuperNodes' CPU during the run).
Every engine runs in its own session: with Linux's autogroup scheduling a session gets a fair
share of the CPUs against other sessions, so on a shared machine wall times are comparable only
between engines that run the same way (and CPU seconds are the steadier measure).
All engines produce bit-identical weights on the same round; the benchmark checks it.
Engines run in turn, ``--repeat`` times (interleaved), so load from other processes affects all
of them alike; the table shows the median (and the range) per engine.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/engine_round.py        # paper scale (~8 min on 2 cores)
    .venv/bin/python bench/engine_round.py --scale 0.05 --json /tmp/engine_round.json

From other benchmarks (``sys.path`` holding ``bench/``)::

    from engine_round import flower_sim_round, paper_round_config
    result, weights = flower_sim_round(paper_round_config(data_dir="../shared/data"), "/tmp/x", sim_cpus=1)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from fissionvae.config import load_config
from fissionvae.data.federated import client_groups
from fissionvae.federation.flower.deployment import LocalDeployment
from fissionvae.federation.flower.launch import FlowerOptions, train_with_flower
from fissionvae.federation.sampling import sample_participants
from fissionvae.runs import RunDir

REPO = Path(__file__).resolve().parents[1]

ENGINES = ("inprocess", "flower-sim-1cpu", "flower-sim", "flower", "flower-overhead", "flower-latency")


def seed_with(num_clients: int, p: float, wanted: int) -> int:
    return next(s for s in range(10_000) if len(sample_participants(s, 0, num_clients, p)) == wanted)


def paper_round_config(
    config: str | Path = REPO / "configs/mixed_mnist/fission_ld.yaml",
    data_dir: str | Path | None = None,
    scale: float = 1.0,
    participants: int = 10,
):
    """``config`` as one round whose seed draws exactly ``participants`` clients, data from ``data_dir``.

    ``scale`` < 1 keeps that fraction of each group's 60,000 training images (a quick check).
    ``federation.workers`` is 1: the in-process engine trains the clients one after another in
    one process (the worker-pool engine has its own benchmark).
    """
    sets = ["data.download=false", "federation.workers=1"] + ([f"data.dir={data_dir}"] if data_dir is not None else [])
    raw = load_config(config, sets).to_dict()
    n = len(client_groups(load_config(raw=raw)))
    raw["seed"] = seed_with(n, raw["federation"]["participation"], participants)
    raw["name"] = "engine_round"
    raw["train"]["rounds"] = 1
    if scale != 1.0:
        for g in raw["data"]["groups"]:
            g["train_size"] = int(round(60000 * scale))
    return load_config(raw=raw)


def probe_config(cfg):
    """The same federation and round-1 cohort, one batch per client (32 images, 1 epoch)."""
    raw = cfg.to_dict()
    raw["name"] = "overhead"
    raw["train"].update(rounds=1, local_epochs=1)
    for g in raw["data"]["groups"]:
        g["train_size"] = raw["train"]["batch_size"] * g["clients"]
    return load_config(raw=raw)


def latency_config(cfg):
    """One client per group, one batch each, every client in every round, 2 rounds."""
    raw = cfg.to_dict()
    raw["name"] = "latency"
    raw["federation"]["participation"] = 1.0
    raw["train"].update(rounds=2, local_epochs=1)
    for g in raw["data"]["groups"]:
        g.update(clients=1, train_size=raw["train"]["batch_size"])
    return load_config(raw=raw)


def summarise(name: str, run: RunDir, cfg, total: float) -> dict:
    metrics = run.metrics()
    rounds = [m for m in metrics if m["type"] == "round"]
    first = [m for m in metrics if m["type"] == "client" and m["round"] == 1]
    return {
        "engine": name,
        "clients": len(rounds[0]["clients"]),
        "samples": int(sum(c["num_samples"] for c in first) * cfg.train.local_epochs),
        "round_seconds": [round(r["seconds"], 2) for r in rounds],
        "samples_per_s": round(rounds[0]["samples_per_s"], 1),
        "client_train_seconds_sum": round(sum(c["seconds"] for c in first), 2),
        "client_train_seconds_max": round(max((c["seconds"] for c in first), default=0.0), 2),
        "total_seconds": round(total, 2),
    }


INPROCESS = "from fissionvae.runs import RunDir; from fissionvae.federation.engine import train; r = RunDir.open({path!r}); train(r.load_config(), r, progress=False)"


class CpuMeter(threading.Thread):
    """CPU seconds (user + system) of every process of one engine run, sampled from /proc.

    A process belongs to the run if its environment has ``FISSIONVAE_BENCH=<tag>`` (everything
    this benchmark starts for the run inherits it) or ``FLWR_HOME`` under ``home_root`` (the
    loopback deployment, started earlier: its CPU before the run is subtracted). Processes are
    sampled every ``interval`` seconds, so one that lives shorter than that is missed.
    """

    def __init__(self, tag: str, home_root: Path | None = None, interval: float = 0.5):
        super().__init__(daemon=True)
        self.tag = f"FISSIONVAE_BENCH={tag}".encode()
        self.home = f"FLWR_HOME={home_root.resolve()}".encode() if home_root is not None else None
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.baseline: dict[int, float] = {}
        self.halt = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.sample(initial=True)

    def sample(self, initial: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    env = fh.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if self.tag not in env and not (self.home and any(e.startswith(self.home) for e in env)):
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            if initial:
                self.baseline[pid] = cpu
            self.last[pid] = max(cpu, self.last.get(pid, 0.0))

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def stop(self) -> float:
        self.halt.set()
        self.join()
        self.sample()
        return sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.last.items())


def run_engine(
    label: str,
    name: str,
    cfg,
    root: Path,
    deployment: LocalDeployment | None,
    sim_cpus: int | None = None,
    client_cpus: int = 1,
) -> tuple[dict, dict]:
    """Run one engine; the in-process engine runs in its own process and session, like Flower's."""
    run = RunDir.create(root, cfg, label)
    os.environ["FISSIONVAE_BENCH"] = label
    meter = CpuMeter(
        label,
        deployment.workdir
        if deployment is not None and name in ("flower", "flower-overhead", "flower-latency")
        else None,
    )
    meter.start()
    start = time.perf_counter()
    try:
        if name == "inprocess":
            subprocess.run(
                [sys.executable, "-c", INPROCESS.format(path=str(run.path))], check=True, start_new_session=True
            )
        elif name in ("flower-sim", "flower-sim-1cpu"):
            opts = FlowerOptions(
                echo=False, client_cpus=client_cpus, sim_cpus=1 if name == "flower-sim-1cpu" else sim_cpus
            )
            train_with_flower(cfg, run, "flower-sim", options=opts)
        else:
            assert deployment is not None
            train_with_flower(
                cfg,
                run,
                "flower",
                deployment.control_address,
                options=FlowerOptions(
                    echo=False, node_wait=0 if len(deployment.clients) < len(client_groups(cfg)) else 300
                ),
            )
    finally:
        total = time.perf_counter() - start
        cpu = meter.stop()
        del os.environ["FISSIONVAE_BENCH"]
    res = summarise(name, run, cfg, total)
    res["cpu_seconds"] = round(cpu, 1)
    res["samples_per_cpu_s"] = round(res["samples"] / cpu, 1) if cpu > 0 else None
    return res, run.load_state().weights


def flower_sim_round(
    cfg, root: str | Path, *, sim_cpus: int | None = None, client_cpus: int = 1, label: str = "flower-sim"
) -> tuple[dict, dict]:
    """Run ``cfg`` (e.g. :func:`paper_round_config`) on Flower's simulation engine in a new run
    folder ``<root>/<label>``; every process it starts is stopped before it returns.

    ``sim_cpus``: CPUs Ray may use (1: one simulated client at a time, the in-process engine's
    compute; None: all cores); ``client_cpus``: Ray CPUs per simulated client (1: as many clients at
    once as cores; 2: Flower's own default, one client at a time on 2 cores). Returns the summary (round wall time and
    samples/s from metrics.jsonl, clients' training time, command total, CPU seconds of all
    its processes) and the final weights.
    """
    return run_engine(
        label,
        "flower-sim-1cpu" if sim_cpus == 1 else "flower-sim",
        cfg,
        Path(root),
        None,
        sim_cpus=sim_cpus,
        client_cpus=client_cpus,
    )


def add_round_arguments(p: argparse.ArgumentParser) -> None:
    """The options that define the benchmarked round (shared with bench/engine_speed.py)."""
    p.add_argument("--config", type=Path, default=REPO / "configs/mixed_mnist/fission_ld.yaml")
    p.add_argument("--data-dir", default=os.environ.get("FISSIONVAE_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the training images (1.0: 6,000 per client)")
    p.add_argument(
        "--participants",
        type=int,
        default=10,
        help="clients drawn in the round (a seed that draws exactly this many is chosen)",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_arguments(p)
    p.add_argument(
        "--all-nodes",
        action="store_true",
        help="deployment: a SuperNode for every client, not only the round's participants",
    )
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    p.add_argument("--repeat", type=int, default=1, help="run the engine list this many times, interleaved (default 1)")
    p.add_argument("--workdir", type=Path, help="where run folders go (default: a temporary folder, deleted)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}")

    cfg = paper_round_config(args.config, args.data_dir, args.scale, args.participants)
    chosen = sample_participants(cfg.seed, 0, len(client_groups(cfg)), cfg.federation.participation)
    print(
        f"config {args.config.name}: seed {cfg.seed}, {len(chosen)} of {len(client_groups(cfg))} clients in round 1, "
        f"{cfg.data.groups[0].train_size or 60000} training images per group, {cfg.train.local_epochs} epochs, batch {cfg.train.batch_size}",
        flush=True,
    )
    tmp = tempfile.TemporaryDirectory(prefix="engine_round-") if args.workdir is None else None
    root = Path(tmp.name) if tmp else args.workdir
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results, weights = [], {}
    deployment = None
    latency_deployment = None
    try:
        for rep in range(args.repeat):
            for name in engines:
                if name in ("flower", "flower-overhead") and deployment is None:
                    t = time.perf_counter()
                    deployment = LocalDeployment(
                        cfg, root / "deployment", data_dir=args.data_dir, clients=None if args.all_nodes else chosen
                    ).start()
                    print(
                        f"loopback deployment: SuperLink + {len(deployment.nodes)} SuperNodes started in {time.perf_counter() - t:.1f} s",
                        flush=True,
                    )
                if name == "flower-latency" and latency_deployment is None:
                    latency_deployment = LocalDeployment(
                        latency_config(cfg), root / "latency-deployment", data_dir=args.data_dir
                    ).start()
                run_cfg = {"flower-overhead": probe_config, "flower-latency": latency_config}.get(name, lambda c: c)(
                    cfg
                )
                print(f"-- {name} (repeat {rep + 1}/{args.repeat}) ...", flush=True)
                res, w = run_engine(
                    f"{name}-{rep}", name, run_cfg, root, latency_deployment if name == "flower-latency" else deployment
                )
                res["engine"], res["repeat"] = name, rep + 1
                res["loadavg_1min"] = round(os.getloadavg()[0], 2)
                results.append(res)
                if name not in ("flower-overhead", "flower-latency"):
                    weights[name] = w
                print(json.dumps(res), flush=True)
    finally:
        for dep in (deployment, latency_deployment):
            if dep is not None:
                dep.stop()
                assert dep.procs.alive() == [], dep.procs.alive()
        if tmp is not None:
            tmp.cleanup()
    names = list(weights)
    identical = all(all(torch.equal(weights[names[0]][k], weights[n][k]) for k in weights[names[0]]) for n in names[1:])
    out = {
        "config": str(args.config),
        "seed": cfg.seed,
        "scale": args.scale,
        "participants": len(chosen),
        "weights_bit_identical": identical,
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print()
    print(
        "| engine | round wall (s), median [range] | samples/s, median | clients' training (s, sum / max), median | command total (s), median | command CPU (s), median | samples per CPU-s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in engines:
        rows = [r for r in results if r["engine"] == name]
        walls = [statistics.median(r["round_seconds"]) for r in rows]  # over rounds (flower-latency has 2)

        def med(key, rows=rows):
            return statistics.median(r[key] for r in rows)

        rng = f" [{min(walls):.1f}-{max(walls):.1f}]" if len(rows) > 1 else ""
        print(
            f"| {name} | {statistics.median(walls):.1f}{rng} | {med('samples_per_s'):,.0f} | {med('client_train_seconds_sum'):.1f} / {med('client_train_seconds_max'):.1f} | {med('total_seconds'):.1f} | {med('cpu_seconds'):.1f} | {med('samples_per_cpu_s'):,.0f} |"
        )
    print(
        f"\nweights bit-identical across {', '.join(names)}: {identical}; load average before {out['machine']['loadavg_before']}, after {out['machine']['loadavg_after']}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
