"""``fissionvae study fission --plan``: what is left of a study and how long it takes on this machine.

Training hours at the median samples/s of the ledger's finished runs of each mode (this CPU model's
first), evaluations at the median wall time of the ledger's evaluations of as many generated images
(this CPU model's first), else at the benchmarked FID rate of the runtime ``auto`` picks. Nothing
is trained or written.
"""

from __future__ import annotations

import numpy as np

from fissionvae.evaluation.runtimes import resolve_runtime
from fissionvae.studies.fission import Study, existing_run
from fissionvae.studies.fission_ledger import Ledger, cpu_model
from fissionvae.studies.fission_options import PAPER_EVAL_IMAGES, StudyOptions, planned_sample_passes

# FID Inception images per CPU-second on the 2-core AMD EPYC dev machine, per runtime, preprocessing
# included (docs/benchmarks.md, "FID features under OpenVINO and ONNX Runtime"): the plan's estimate.
FID_IMAGES_PER_CPU_SECOND = {"openvino": 8.47, "onnx": 7.46, "torch": 2.59}


def describe_plan(opts: StudyOptions, samples_per_second: float = 5000.0) -> str:
    """A text table of the plan, in the order the jobs start: each run, its tables, state, planned sample passes
    and training time left.

    A run's time is at the median samples/s of the ledger's finished runs of its mode trained on
    this CPU model (load included), else on any CPU, else at ``samples_per_second``.
    """
    study = Study(opts)
    plan = study.work
    measured = {mode: float(np.median(r)) for mode, r in study.ledger.training_rates().items()}
    here = {mode: float(np.median(r)) for mode, r in study.ledger.training_rates(cpu_model()).items()}
    measured.update(here)
    lines = [f"{'run':<44} {'tables':<12} {'state':<22} {'sample passes':>14} {'hours':>6} {'evals':>5}"]
    total, total_hours, n_eval = 0.0, 0.0, 0
    runs = study.job_order()  # the order the jobs start in
    for spec in runs:
        cfg = study.cfgs[spec]
        evals_left = [ev for ev in plan.evals_of(spec) if study.outcome(ev).entry is None]
        n_eval += len(evals_left)
        run, status = existing_run(cfg, opts.runs_dir)
        if not evals_left:
            state, done_frac = "in the ledger", 1.0
        elif run is None:
            state, done_frac = "new", 0.0
        else:
            done_frac = (status or {}).get("rounds_done", 0) / cfg.effective_rounds
            state = f"{(status or {}).get('state')} {(status or {}).get('rounds_done', 0)}/{cfg.effective_rounds}"
        passes = planned_sample_passes(cfg)
        left = passes * (1 - done_frac)
        hours = left / measured.get(cfg.mode, samples_per_second) / 3600
        total, total_hours = total + left, total_hours + hours
        lines.append(
            f"{cfg.name:<44} {','.join(plan.tables_of(spec)):<12} {state:<22} {passes:>14,.0f} {hours:>6.2f} "
            f"{len(evals_left):>5}"
        )
    rates = ", ".join(
        f"{'federated' if mode == 'federated' else 'centralised'} "
        + (
            f"{measured[mode]:,.0f} (the ledger's median{', this CPU' if mode in here else ', other CPUs'})"
            if mode in measured
            else f"{samples_per_second:,.0f}"
        )
        for mode in ("federated", "centralized")
    )
    lines.append(
        f"{len(runs)} run{'s' * (len(runs) != 1)}; training left: {total:,.0f} sample passes = "
        f"{total_hours:.1f} h at {rates} samples/s"
    )
    gen = opts.num_samples or opts.scale.num_samples() or PAPER_EVAL_IMAGES
    lines.append(_evaluation_line(study.ledger, opts, n_eval, gen))
    return "\n".join(lines)


def _evaluation_line(ledger: Ledger, opts: StudyOptions, n_eval: int, gen: int) -> str:
    """The plan's evaluation time: at the median wall time of the ledger's evaluations of ``gen``
    generated images on this CPU model, else on any CPU, else at the benchmark's FID rate."""
    if not opts.fid:
        return f"{n_eval} evaluations left, no FID"
    head = f"{n_eval} evaluations left x {gen:,} generated images"
    here, anywhere = ledger.evaluation_seconds(gen, cpu_model()), ledger.evaluation_seconds(gen)
    if anywhere:
        seconds = float(np.median(here or anywhere))
        where = "this CPU" if here else "other CPUs"
        return (
            f"{head}: {n_eval * seconds / 3600:.1f} h of one CPU core at {seconds / 60:.0f} min each "
            f"(the ledger's median, {where}); --jobs 2 runs two at once"
        )
    runtime = resolve_runtime("auto", opts.device or "cpu")
    rate = FID_IMAGES_PER_CPU_SECOND[runtime]
    return (
        f"{head} = {n_eval * gen:,} images through the FID Inception: "
        f"{n_eval * gen / rate / 3600:.1f} h of one CPU core at {rate:g} images/s with {runtime} "
        f"(docs/benchmarks.md); --jobs 2 runs two at once"
    )
