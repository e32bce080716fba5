"""Engine speed on one paper-scale Mixed MNIST round: a naive PyTorch loop, our engine with 1 and
with 2 worker processes, and Flower's simulation engine, side by side in one run; plus the
roofline figure of one worker.

The work (same for every engine): ``configs/mixed_mnist/fission_ld.yaml`` (the 784-512-256-16 MLP
VAE with two decoder branches and wave priors, batch 32, lr 1e-3) with the first seed whose
round 1 draws exactly 10 of the 20 clients, 5 local epochs over 6,000 images each:
10 x 5 x 6,000 = 300,000 samples. ``--scale s`` gives each client 6,000 s images (quick checks).

Engines (``--engines``):

- ``naive``: written plainly below: the same network as a plain ``nn.Module``, the same clients'
  data as tensors indexed with ``randperm`` batches, PyTorch's default ``Adam`` (not fused),
  clients one after another in one process, one thread.
- ``naive-mt``: the same loop with PyTorch's default thread count (one per core); on a loaded
  machine far slower than one thread, as OpenMP threads wait for each other.
- ``engine-1``: ``fissionvae``'s engine, ``federation.workers: 1`` (clients in the server process).
- ``engine-1-mt``: ``federation.workers: 1``, ``federation.threads: <cores>`` (clients one after
  another in the server process, each product split over all cores).
- ``engine-2``: ``federation.workers: 2`` (two worker processes, one torch thread each).
  All three run round 1 in a child process exactly as ``train`` does (``Federation.from_config``, the
  dispatcher ``federation.workers`` selects, ``run_round``), timed from dispatch to aggregation
  like metrics.jsonl's ``seconds``, with the CPU time of the server and of every client in its
  worker.
- ``flower-sim``: ``--engine flower-sim`` (Flower's simulation runtime, 1 CPU per simulated
  client, all cores), run by ``bench/engine_round.py``'s ``flower_sim_round``, then once more on
  the same cohort training one batch per client (its fixed cost); skipped with a note if Flower
  is not installed (or with ``--no-flower``).
- ``flower-sim-default``: the same with Flower's own default client resources (2 CPUs per
  simulated client, ``flwr``'s Ray backend default): on a 2-core machine one client at a time.

Every engine runs as its own process in its own session, one after another, ``--repeat`` times
interleaved. On a machine shared with other work the wall times say little about parallelism:
with Linux's autogroup scheduling each session gets an equal share of a saturated machine
however many processes it runs. So besides the measured wall time (and samples/s) each engine
reports the CPU its round's work took (``work_cpu_seconds``; see :func:`run_one`) and the
round's critical path in CPU time, i.e. what the round takes on idle cores
(``idle_round_seconds``; for Flower a bound in its favour). Our engine (1 and 2 workers) and
Flower must end with bit-identical weights (checked; the naive loop is a different program, and
``engine-1-mt``'s multi-threaded products may round differently: reported, not required).

The roofline part (``--roofline``, on by default) measures in this process, with one thread and
CPU time: this CPU's fp32 matmul peak (a 4096^3 matmul, best of 3) and copy bandwidth, the step's
17 matrix products alone, the model's forward + backward and the fused/default Adam step at batch
32, the FLOPs per sample of the MLP and the step's estimated memory traffic; ``--figure PATH``
draws them on a roofline. Then the steps' wall time with one thread and with one per core.

Usage::

    nice -n 10 .venv/bin/python bench/engine_speed.py --json runs/engine_speed.json     # ~11 min
    nice -n 10 .venv/bin/python bench/engine_speed.py --scale 0.05 --engines naive,engine-1,engine-2
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

ENGINES = ("naive", "naive-mt", "engine-1", "engine-1-mt", "engine-2", "flower-sim", "flower-sim-default")
MULTI_THREADED = {"naive-mt", "engine-1-mt"}  # PyTorch's default threads (one per core) instead of one
FLOWER_ENGINES = {"flower-sim": 1, "flower-sim-default": 2}  # Ray CPUs per simulated client


# --------------------------------------------------------------------------- the naive loop


class NaiveVAE(nn.Module):
    """The fission_ld network written plainly: shared MLP encoder, one MLP decoder per group."""

    def __init__(self, groups: int = 2, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 2 * latent)
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784))
            for _ in range(groups)
        )
        wave = torch.zeros(groups, latent)
        for g in range(groups):
            wave[g, g * latent // groups : (g + 1) * latent // groups] = 1.0
        self.register_buffer("prior", wave)

    def loss(self, x: torch.Tensor, group: int) -> torch.Tensor:
        x = x.flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(self.decoders[group](z), x, reduction="none").sum(1)
        kl = 0.5 * (logvar.exp() + (mu - self.prior[group]) ** 2 - 1.0 - logvar).sum(1)
        return (recon + kl).mean()


def naive_round(run_path: Path) -> dict:
    """One round of the run's round-1 participants with the naive loop; writes naive.json."""
    from fissionvae.federation.engine import Federation
    from fissionvae.federation.sampling import sample_participants
    from fissionvae.runs import RunDir

    cfg = RunDir.open(run_path).load_config()
    fed = Federation.from_config(cfg)
    chosen = sample_participants(cfg.seed, 0, len(fed.clients), cfg.federation.participation)
    torch.manual_seed(cfg.seed)
    model = NaiveVAE()
    global_weights = {k: v.clone() for k, v in model.state_dict().items()}
    start, cpu = time.perf_counter(), time.process_time()
    samples = 0
    for cid in chosen:
        data = fed.clients[cid]
        group = int(data.group_ids[0])
        model.load_state_dict(global_weights)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        for _ in range(cfg.train.local_epochs):
            for batch in torch.randperm(data.num_samples).split(cfg.train.batch_size):
                loss = model.loss(data.images[batch], group)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                samples += len(batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "samples": samples,
        "clients": chosen,
        "threads": torch.get_num_threads(),
    }
    (run_path / "child.json").write_text(json.dumps(out))
    return out


def engine_round(run_path: Path) -> dict:
    """Round 1 of the run with our engine, as ``train`` runs it (``Federation``, the dispatcher that
    ``federation.workers`` selects, ``run_round``), timed: wall and CPU of the server process and,
    with a pool, each client's CPU in its worker. Writes child.json and the new weights."""
    from fissionvae.federation.engine import Federation, InProcessDispatcher, run_round
    from fissionvae.federation.workers import start_pool
    from fissionvae.runs import RunDir

    cfg = RunDir.open(run_path).load_config()
    torch.set_num_threads(cfg.federation.threads)
    t = time.perf_counter()
    fed = Federation.from_config(cfg)
    load_seconds = time.perf_counter() - t
    pool = start_pool(fed, cfg.train.rounds)
    try:
        dispatch = pool or InProcessDispatcher(fed)
        weights = fed.initial_state().weights
        start, cpu = time.perf_counter(), time.process_time()
        outcome = run_round(fed, weights, 0, dispatch)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        out = {
            "seconds": seconds,
            "server_cpu_seconds": cpu,
            "load_seconds": load_seconds,
            "workers": pool.size if pool else 1,
            "pool_start_seconds": pool.start_seconds if pool else 0.0,
            "tasks": pool.round_stats if pool else [],
            "clients": outcome.participants,
            "samples": sum(r.num_samples for r in outcome.results) * cfg.train.local_epochs,
            "client_seconds": [r.metrics["seconds"] for r in outcome.results],
        }
    finally:
        if pool is not None:
            pool.close()
    torch.save(outcome.weights, run_path / "weights.pt")
    (run_path / "child.json").write_text(json.dumps(out))
    return out


# --------------------------------------------------------------------------- engines


def make_config(args, workers: int, threads: int = 1):
    """The round of ``bench/engine_round.py`` (same config, seed, data), with ``workers`` workers
    of ``threads`` torch threads each."""
    from engine_round import paper_round_config
    from fissionvae.config import load_config

    raw = paper_round_config(args.config, args.data_dir, args.scale, args.participants).to_dict()
    raw["federation"]["workers"] = workers
    raw["federation"]["threads"] = threads
    return load_config(raw=raw)


def run_child(label: str, argv: list[str], threads: str | None) -> tuple[float, float]:
    """Run ``argv`` in its own session, tagged for the CPU meter; returns (wall s, CPU s).

    ``threads``: OMP_NUM_THREADS for the child; None removes it (PyTorch's default thread count).
    """
    from engine_round import CpuMeter

    env = dict(os.environ, FISSIONVAE_BENCH=label)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MKL_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    meter = CpuMeter(label)
    meter.start()
    start = time.perf_counter()
    try:
        subprocess.run(argv, check=True, start_new_session=True, env=env)
    finally:
        wall = time.perf_counter() - start
        cpu = meter.stop()
    return wall, cpu


def run_one(name: str, rep: int, args, root: Path) -> tuple[dict, dict | None]:
    """One engine on the round; returns its figures (and final weights, except for the naive loop).

    ``round_seconds`` is wall time under whatever else runs on the machine; ``work_cpu_seconds`` is
    the CPU the round's training took (naive: its loop; engine-1: the server process during the
    round; engine-2: the server's plus every worker's CPU per client; flower-sim: all its processes'
    CPU minus that of the same command training one batch per client, i.e. Flower's start-up and
    fixed round cost removed); ``idle_round_seconds`` is the round's critical path in CPU time (what
    the round takes on idle cores): naive and engine-1 their CPU, engine-2 the busiest worker's CPU
    plus the server's, flower-sim its work CPU spread perfectly over 2 cores (a bound in its favour),
    flower-sim-default its work CPU (one client at a time), the multi-threaded ``naive-mt`` and
    ``engine-1-mt`` their wall time (their threads run at once; meaningful on an idle machine only).
    """
    from fissionvae.runs import RunDir

    label = f"{name}-{rep}"
    multi = name in MULTI_THREADED
    cfg = make_config(args, 2 if name == "engine-2" else 1, (os.cpu_count() or 1) if multi else 1)
    if name in FLOWER_ENGINES:
        from engine_round import flower_sim_round, probe_config

        per_client = FLOWER_ENGINES[name]
        res, weights = flower_sim_round(cfg, root, label=label, client_cpus=per_client)  # all cores
        fixed, _ = flower_sim_round(probe_config(cfg), root, label=f"{label}-probe", client_cpus=per_client)
        work = max(res["cpu_seconds"] - fixed["cpu_seconds"], 1e-9)
        at_once = max(1, (os.cpu_count() or 1) // per_client)  # simulated clients training at once
        res.update(
            engine=name,
            repeat=rep + 1,
            round_seconds=res["round_seconds"][0],
            command_seconds=res.pop("total_seconds"),
            client_cpus=per_client,
            fixed_cpu_seconds=fixed["cpu_seconds"],
            work_cpu_seconds=round(work, 1),
            idle_round_seconds=round(work / at_once, 2),
        )
    else:
        run = RunDir.create(root, cfg, label)
        child = "--child-naive" if name.startswith("naive") else "--child-engine"
        wall, cpu = run_child(label, [sys.executable, __file__, child, str(run.path)], threads=None if multi else "1")
        c = json.loads((run.path / "child.json").read_text())
        res = {
            "engine": name,
            "repeat": rep + 1,
            "clients": len(c["clients"]),
            "samples": c["samples"],
            "round_seconds": round(c["seconds"], 2),
            "command_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 1),
        }
        if name.startswith("naive"):
            res.update(
                threads=c["threads"],
                work_cpu_seconds=round(c["cpu_seconds"], 2),
                idle_round_seconds=round(c["cpu_seconds"], 2),
            )
            weights = None
        else:
            per_worker: dict[int, float] = {}
            for t in c["tasks"]:
                per_worker[t["worker"]] = per_worker.get(t["worker"], 0.0) + t["cpu_seconds"]
            work = c["server_cpu_seconds"] + sum(per_worker.values())
            idle = c["server_cpu_seconds"] + max(per_worker.values(), default=0.0)
            res.update(
                workers=c["workers"],
                pool_start_seconds=round(c["pool_start_seconds"], 2),
                data_load_seconds=round(c["load_seconds"], 2),
                worker_cpu_seconds=[round(v, 2) for _, v in sorted(per_worker.items())],
                server_cpu_seconds=round(c["server_cpu_seconds"], 2),
                work_cpu_seconds=round(work, 2),
                idle_round_seconds=round(idle, 2),
                client_seconds_sum=round(sum(c["client_seconds"]), 2),
            )
            weights = torch.load(run.path / "weights.pt", weights_only=True)
    if multi:  # threads of one process run at once: the critical path is the wall time, not the CPU
        res["idle_round_seconds"] = res["round_seconds"]
    res["samples_per_s"] = round(res["samples"] / res["round_seconds"], 1)
    res["samples_per_work_cpu_s"] = round(res["samples"] / res["work_cpu_seconds"], 1)
    res["idle_samples_per_s"] = round(res["samples"] / res["idle_round_seconds"], 1)
    return res, weights


# --------------------------------------------------------------------------- roofline


def mlp_flops_per_sample(layers: list[tuple[int, int]]) -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of an MLP per sample: forward, backward, total.

    Backward: a weight gradient per layer (same FLOPs as the forward) and an input gradient for
    every layer but the first (the images need none); biases, activations and the loss are
    element-wise and left out (under 1%).
    """
    fwd = sum(2 * i * o for i, o in layers)
    bwd = fwd + sum(2 * i * o for i, o in layers[1:])
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def cpu_time_per_call(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def pool_start_seconds(data_dir: str) -> float:
    """Wall seconds to start a 2-worker pool (spawn, import torch, map the data, build the model)."""
    from fissionvae.config import load_config
    from fissionvae.federation.engine import Federation
    from fissionvae.federation.workers import WorkerPool

    cfg = load_config(
        REPO / "configs/mixed_mnist/fission_ld.yaml",
        [
            f"data.dir={data_dir}",
            "data.download=false",
            "data.groups.0.train_size=1000",
            "data.groups.1.train_size=1000",
        ],
    )
    with WorkerPool(Federation.from_config(cfg), 2) as pool:
        return pool.start_seconds


def matmul_peak(n: int = 4096) -> float:
    """FLOP/s of an n^3 fp32 matmul on this thread, best of 3 (CPU time)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return max(2 * n**3 / cpu_time_per_call(lambda: a @ b, 1, warmup=1) for _ in range(3))


def stream_bandwidth(mb: int = 256) -> float:
    """Bytes/s of a one-thread copy of ``mb`` MB (read + write counted), best of 3 (CPU time)."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    return max(2 * src.numel() * 4 / cpu_time_per_call(lambda: dst.copy_(src), 3, warmup=1) for _ in range(3))


MLP_LAYERS = [
    (784, 512),
    (512, 256),
    (256, 32),
    (16, 256),
    (256, 512),
    (512, 784),
]  # fission_ld: encoder, one decoder branch


def matmul_only_step(batch: int = 32):
    """The step's 17 matrix products with its shapes and transposes (forward, weight and input
    gradients; no input gradient for the first layer), as a callable, for the matmul-only point."""
    mats = []
    for k, (fan_in, fan_out) in enumerate(MLP_LAYERS):
        mats.append((torch.rand(batch, fan_in), torch.randn(batch, fan_out), torch.randn(fan_out, fan_in), k > 0))

    def step(_i=None):
        for a, grad, w, needs_input_grad in mats:
            torch.mm(a, w.t())
            torch.mm(grad.t(), a)
            if needs_input_grad:
                torch.mm(grad, w)

    return step


def step_traffic_bytes(n_params: int, first_layer: int) -> dict[str, int]:
    """Estimated memory traffic of one batch-32 step (fp32), the roofline's x axis.

    The 4.3 MB of weights do not stay in the 1 MB L2, so each pass streams them: the forward
    reads every weight, the backward reads every weight but the first layer's (input gradients)
    and writes every weight gradient; Adam reads parameters, gradients and both moments and writes
    parameters and moments (7 x 4 bytes per parameter). Activations (32 x ~3k floats) are left out.
    """
    w = 4 * n_params
    matmuls = w + (w - 4 * first_layer) + w
    return {"matmuls": matmuls, "adam": 7 * 4 * n_params, "step": matmuls + 7 * 4 * n_params}


def roofline_figure(roof: dict, path: Path) -> Path:
    """The single worker on a roofline: achieved GFLOP/s against arithmetic intensity, under this
    CPU's one-thread fp32 matmul peak and copy bandwidth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak, bw = roof["peak_gflops_1thread"], roof["stream_gb_per_s_1thread"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ridge = peak / bw
    ax.plot(
        [0.5, ridge, 200],
        [bw * 0.5, peak, peak],
        color="k",
        lw=1.5,
        label=f"roof: {peak:.0f} GFLOP/s fp32 matmul peak, {bw:.0f} GB/s copy",
    )
    points = [
        ("the 17 matmuls alone", "matmuls", "matmuls_only", "tab:green"),
        ("our forward + backward", "matmuls", "ours_fwd_bwd", "tab:blue"),
        ("our step (+ fused Adam)", "step", "ours_step", "tab:purple"),
        ("naive step (default Adam)", "step", "naive_step", "tab:red"),
    ]
    for label, traffic, case, colour in points:
        x = roof["intensity_flop_per_byte"][traffic]
        y = roof["gflops"][case]
        ax.scatter(
            [x], [y], color=colour, zorder=3, label=f"{label}: {y:.0f} GFLOP/s, {roof['ms_per_step'][case]:.2f} ms/step"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_yticks([t for t in (5, 10, 20, 30, 50, 70, 100, 200) if t <= 1.5 * peak])
    ax.set_xticks([0.5, 1, 2, 5, 10, 20, 50, 100, 200])
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("arithmetic intensity (FLOP per byte of estimated memory traffic)")
    ax.set_ylabel("achieved GFLOP/s (one thread)")
    ax.set_title(f"One worker, batch 32: {roof['flops_per_sample']['total'] / 1e6:.2f} MFLOP per sample", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    from fissionvae.viz import save_figure

    save_figure(fig, path)
    plt.close(fig)
    return path


def seconds_per_step(fn, gen: torch.Generator, steps: int, clock) -> float:
    """Mean ``clock`` seconds of ``fn(batch_indices)`` over ``steps`` shuffled batch-32 index sets
    of 6,000 images, after one warm-up call."""
    batches = torch.randperm(6000, generator=gen).split(32)[:steps]
    fn(batches[-1])
    start = clock()
    for i in batches:
        fn(i)
    return (clock() - start) / steps


def thread_scaling(cases: dict, gen: torch.Generator, reps: int, steps: int) -> dict[str, dict[str, float]]:
    """Wall ms per step of ``cases`` with one torch thread and with one per core, interleaved
    (``reps`` rounds of ``steps`` steps each; medians). Wall time, as threads of one process run
    at once: meaningful on an idle machine only."""
    counts = sorted({1, os.cpu_count() or 1})
    times: dict[tuple[int, str], list[float]] = {}
    try:
        for _ in range(reps):
            for n in counts:
                torch.set_num_threads(n)
                for name, fn in cases.items():
                    times.setdefault((n, name), []).append(seconds_per_step(fn, gen, steps, time.perf_counter))
    finally:
        torch.set_num_threads(1)
    return {str(n): {name: round(statistics.median(times[n, name]) * 1e3, 3) for name in cases} for n in counts}


def roofline(data_dir: str, reps: int = 5, steps: int = 50) -> dict:
    """Peak fp32 matmul FLOP/s and the single worker's step, one thread, CPU time.

    The step parts are timed interleaved (``reps`` rounds of ``steps`` steps of each case, median
    of the per-round means), so load from other processes hits them alike: our engine's step
    (``model.local_step``: forward, backward, fused Adam), its forward + backward alone, the
    fused and the default Adam step alone, and the naive loop's step (default Adam); then
    :func:`thread_scaling` of the steps with one thread and with one per core.
    """
    from fissionvae.config import load_config
    from fissionvae.models.vae import build_model

    torch.set_num_threads(1)
    peak = matmul_peak()
    cfg = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml")
    model = build_model(cfg)
    naive = NaiveVAE()
    images = torch.rand(6000, 1, 28, 28)
    groups = torch.zeros(6000, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)
    params = model.owned_parameters([0])
    ours_adam = torch.optim.Adam(params, lr=1e-3, fused=True)
    fused = torch.optim.Adam(params, lr=1e-3, fused=True)
    plain = torch.optim.Adam(params, lr=1e-3)
    naive_adam = torch.optim.Adam(naive.parameters(), lr=1e-3)

    def fwd_bwd(i):
        model.zero_grad(set_to_none=True)
        model.terms(images[i], groups[i], gen)["loss"].mean().backward()

    def naive_step(i):
        loss = naive.loss(images[i], 0)
        naive_adam.zero_grad()
        loss.backward()
        naive_adam.step()

    cases = {
        "matmuls_only": matmul_only_step(),
        "ours_step": lambda i: model.local_step(images[i], groups[i], ours_adam, gen),
        "ours_fwd_bwd": fwd_bwd,
        "adam_fused": lambda i: fused.step(),
        "adam_default": lambda i: plain.step(),
        "naive_step": naive_step,
    }
    by_threads = thread_scaling({k: cases[k] for k in ("ours_step", "ours_fwd_bwd", "naive_step")}, gen, reps, steps)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            times[name].append(seconds_per_step(fn, gen, steps, time.process_time))
    ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    flops = mlp_flops_per_sample(MLP_LAYERS)
    n_params = sum(p.numel() for p in params)
    traffic = step_traffic_bytes(n_params, MLP_LAYERS[0][0] * MLP_LAYERS[0][1])
    owned = {k: v for k, v in model.state_dict().items() if k.startswith(model.owned_prefixes([0]))}
    blob = pickle.dumps(owned, protocol=pickle.HIGHEST_PROTOCOL)
    dumps = min(cpu_time_per_call(lambda: pickle.dumps(owned, protocol=pickle.HIGHEST_PROTOCOL), 5) for _ in range(3))
    loads = min(cpu_time_per_call(lambda: pickle.loads(blob), 5) for _ in range(3))
    per_step = 32 * flops["total"]
    return {
        "pool_start_seconds_2_workers": round(pool_start_seconds(data_dir), 2),
        "peak_gflops_1thread": round(peak / 1e9, 1),
        "stream_gb_per_s_1thread": round(stream_bandwidth() / 1e9, 1),
        "traffic_bytes_per_step": traffic,
        "intensity_flop_per_byte": {k: round(per_step / v, 2) for k, v in traffic.items()},
        "flops_per_sample": flops,
        "params_per_client": n_params,
        "adam_bytes_per_step": 7 * 4 * n_params,  # read param, grad, m, v; write param, m, v (fp32)
        "ms_per_step": {k: round(v, 3) for k, v in ms.items()},
        "samples_per_cpu_s": {k: round(32e3 / v) for k, v in ms.items() if k.endswith("step")},
        "gflops": {
            k: round(per_step / ms[k] / 1e6, 1) for k in ("matmuls_only", "ours_fwd_bwd", "ours_step", "naive_step")
        },
        "ours_step_vs_naive_step": round(ms["naive_step"] / ms["ours_step"], 2),
        "wall_ms_per_step_by_threads": by_threads,
        "weights_message_mb": round(len(blob) / 1e6, 2),
        "weights_pickle_ms": round(dumps * 1e3, 2),
        "weights_unpickle_ms": round(loads * 1e3, 2),
    }


# --------------------------------------------------------------------------- main


def flower_available() -> bool:
    try:
        import flwr  # noqa: F401

        from fissionvae.federation.flower import launch  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    from engine_round import add_round_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_arguments(p)
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    p.add_argument("--no-flower", action="store_true", help="leave out flower-sim")
    p.add_argument("--no-roofline", action="store_true", help="skip the single-worker roofline measurements")
    p.add_argument("--figure", type=Path, help="write the roofline plot (PNG) here, e.g. docs/benchmarks/roofline.png")
    p.add_argument("--repeat", type=int, default=1, help="run the engine list this many times, interleaved")
    p.add_argument("--workdir", type=Path, help="where run folders go (default: a temporary folder, deleted)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--child-naive", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-engine", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_naive:
        naive_round(args.child_naive)
        return 0
    if args.child_engine:
        engine_round(args.child_engine)
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(engines) - set(ENGINES):
        p.error(f"unknown engines {sorted(set(engines) - set(ENGINES))}")
    notes = []
    if set(FLOWER_ENGINES) & set(engines) and (args.no_flower or not flower_available()):
        engines = [e for e in engines if e not in FLOWER_ENGINES]
        notes.append(
            "Flower engines left out (--no-flower)"
            if args.no_flower
            else "Flower engines left out: Flower is not installed"
        )

    load_before = os.getloadavg()
    cfg = make_config(args, 1)
    print(
        f"{args.config.name}: seed {cfg.seed}, {args.participants} clients x {cfg.train.local_epochs} epochs x "
        f"{(cfg.data.groups[0].train_size or 60000) // cfg.data.groups[0].clients} images; engines {engines}",
        flush=True,
    )
    tmp = tempfile.TemporaryDirectory(prefix="engine_speed-") if args.workdir is None else None
    root = Path(tmp.name) if tmp else args.workdir
    root.mkdir(parents=True, exist_ok=True)
    results, weights = [], {}
    try:
        for rep in range(args.repeat):
            for name in engines:
                print(f"-- {name} (repeat {rep + 1}/{args.repeat}) ...", flush=True)
                res, w = run_one(name, rep, args, root)
                res["loadavg_1min"] = round(os.getloadavg()[0], 2)
                results.append(res)
                if w is not None:
                    weights[name] = w
                print(json.dumps(res), flush=True)
        roof = None if args.no_roofline else roofline(args.data_dir)
    finally:
        if tmp is not None:
            tmp.cleanup()

    def same(a: str, b: str) -> bool:
        return all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])

    names = [n for n in weights if n not in MULTI_THREADED]
    identical = all(same(names[0], n) for n in names[1:])
    multi_identical = {n: same(names[0], n) for n in weights if n in MULTI_THREADED and names}

    def med(name, key):
        vals = [r[key] for r in results if r["engine"] == name and r.get(key) is not None]
        return statistics.median(vals) if vals else None

    ratios = {}
    for key in ("samples_per_s", "idle_samples_per_s", "samples_per_work_cpu_s"):
        rate = {n: med(n, key) for n in engines}
        for ours in ("engine-1", "engine-1-mt", "engine-2"):
            for base in ("naive", "naive-mt", *FLOWER_ENGINES):
                if rate.get(ours) and rate.get(base):
                    ratios.setdefault(key, {})[f"{ours} / {base}"] = round(rate[ours] / rate[base], 2)
    out = {
        "config": str(args.config),
        "seed": cfg.seed,
        "scale": args.scale,
        "participants": args.participants,
        "weights_bit_identical": identical,
        "compared": names,
        "multi_threaded_bit_identical": multi_identical,
        "results": results,
        "ratios": ratios,
        "roofline": roof,
        "notes": notes,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(
        "\n| engine | round wall (s) | samples/s (measured) | work CPU (s) | samples per CPU-s | idle-core round (s) "
        "| samples/s on idle cores | command total (s) | command CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in engines:
        print(
            f"| {n} | {med(n, 'round_seconds'):.1f} | {med(n, 'samples_per_s'):,.0f} | "
            f"{med(n, 'work_cpu_seconds'):.1f} | {med(n, 'samples_per_work_cpu_s'):,.0f} | "
            f"{med(n, 'idle_round_seconds'):.1f} | {med(n, 'idle_samples_per_s'):,.0f} | "
            f"{med(n, 'command_seconds'):.1f} | {med(n, 'cpu_seconds'):.1f} |"
        )
    print(f"\nratios: {json.dumps(ratios)}")
    print(f"weights bit-identical across {', '.join(names)}: {identical}")
    for n, same_weights in multi_identical.items():
        print(f"{n} (multi-threaded products) bit-identical to {names[0]}: {same_weights}")
    if roof:
        print(f"roofline: {json.dumps(roof)}")
        if args.figure:
            print(f"roofline figure: {roofline_figure(roof, args.figure)}")
    for note in notes:
        print(f"note: {note}")
    print(f"load average before {out['machine']['loadavg_before']}, after {out['machine']['loadavg_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
