"""The FissionVAE study on Mixed MNIST: Tables 3, 5, 6, 7 and Figure 10 of Hu et al. (2024).

``fissionvae study fission --dataset mixed_mnist`` (:func:`run_fission_study`) plans the runs the
asked tables need (:mod:`fissionvae.studies.fission_plan`), at a scale
(:mod:`fissionvae.studies.fission_options`), trains each one (or reuses a finished one, or
resumes an interrupted one from its last round: :mod:`fissionvae.studies.common`), evaluates
them (or reuses a matching evaluation), records every finished run and evaluation in the results
ledger (:mod:`fissionvae.studies.fission_ledger`) and rewrites the page from the ledger
(:mod:`fissionvae.studies.fission_page`).

A cell whose evaluation is in the ledger is done, even when its run folder is gone. The other
cells become jobs (:mod:`fissionvae.studies.schedule`): a federated run uses both cores through
the engine's worker pool and runs alone; centralised runs and evaluations use one core each and
run two side by side. ``--only`` restricts a call to the named runs; ``--plan`` is
:mod:`fissionvae.studies.fission_estimate`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fissionvae.config import RunConfig
from fissionvae.evaluation.evaluate import EvalOptions, evaluate_run
from fissionvae.evaluation.floor_eval import floor_entry
from fissionvae.evaluation.inception import resolve_inception_path
from fissionvae.runs import RunDir
from fissionvae.studies.common import (
    config_digest,
    ensure_evaluated,
    ensure_trained,
    eval_matches,
    matching_runs,
    read_status,
)
from fissionvae.studies.fission_ledger import Ledger, Outcome, numbers
from fissionvae.studies.fission_options import (
    Scale,
    StudyOptions,
    count_passes,
    eval_options,
    planned_sample_passes,
    resolve_config,
)
from fissionvae.studies.fission_page import write_page
from fissionvae.studies.fission_plan import EvalSpec, Plan, RunSpec, make_plan
from fissionvae.studies.fission_tables import baseline_entries
from fissionvae.studies.schedule import Job, run_jobs

GRID_IMAGES = 25  # generations per cell and group kept in the ledger (5 x 5)


def cell_key(ev: EvalSpec, scale: Scale) -> str:
    """The ledger key of a cell at a scale: ``<scale label>/<config>/<mode>[/seed<n>]/<result name>``."""
    return f"{scale.label}/{ev.key}"


def _finished(status: dict | None) -> bool:
    return status is not None and status.get("state") == "finished"


def existing_run(cfg: RunConfig, runs_dir: Path) -> tuple[RunDir | None, dict | None]:
    """The best matching run folder of ``cfg`` and its status (None, None when there is none)."""
    matches = matching_runs(runs_dir, cfg)
    return matches[0] if matches else (None, None)


def lookup_result(run: RunDir | None, status: dict | None, eopts: EvalOptions) -> dict | None:
    """A saved evaluation of a finished run answering ``eopts``, or None (nothing is computed)."""
    if run is None or not _finished(status):
        return None
    path = run.path / f"{eopts.result_name}.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if eval_matches(result, run, eopts) and complete(result, eopts) else None


def complete(result: dict, eopts: EvalOptions) -> bool:
    """Whether a matching eval json also has what the study needs: the FID interval, the swap's shared noise."""
    needs_interval = eopts.fid and eopts.fid_bootstrap > 0
    return (not needs_interval or "bootstrap" in result.get("fid", {})) and (
        not eopts.prior_swap or bool(result.get("same_noise_as_unswapped"))
    )


# --------------------------------------------------------------------------- jobs (run in worker processes)


@dataclass(frozen=True)
class TrainJob:
    cfg: RunConfig
    runs_dir: Path
    data_dir: Path | None
    max_rounds: int | None
    progress: bool


@dataclass(frozen=True)
class EvalJob:
    cfg: RunConfig
    runs_dir: Path
    eopts: EvalOptions
    grids_dir: Path
    grid_stem: str


def execute(job: TrainJob | EvalJob) -> dict:
    """Train a run or evaluate a cell (module level: it runs in the scheduler's worker processes)."""
    if isinstance(job, TrainJob):
        trained = ensure_trained(job.cfg, job.runs_dir, job.data_dir, job.progress, max_rounds=job.max_rounds)
        return {"run": str(trained.path)}
    run, _ = existing_run(job.cfg, job.runs_dir)
    if run is None:
        raise FileNotFoundError(f"{job.runs_dir}: no run folder of {job.cfg.name} to evaluate")
    result = ensure_evaluated(run, job.eopts)
    if not complete(result, job.eopts):
        result = evaluate_run(run.path, job.eopts)
    return {"run": str(run.path), "result": result, "grids": write_grids(run, job)}


def write_grids(run: RunDir, job: EvalJob) -> dict[str, str]:
    """GRID_IMAGES generations per group of the cell into the ledger folder; returns group -> file name.

    Drawn from the run seed's sample stream, which does not depend on the prior: the prior-swap
    cell shows the same noise as the unswapped one.
    """
    from fissionvae.api import load_run
    from fissionvae.artifacts import generation_grid
    from fissionvae.viz import GREY_LEVELS, save_grey_grid

    model = load_run(run.path)[0]
    out = {}
    for gi, g in enumerate(job.cfg.group_names):
        partner = (gi + 1) % model.num_groups if job.eopts.prior_swap else None
        images = generation_grid(model, gi, GRID_IMAGES, job.cfg.seed, job.eopts.pathway, partner)
        path = save_grey_grid(images, job.grids_dir / f"{job.grid_stem}_{g}.png", nrow=5, levels=GREY_LEVELS)
        out[g] = path.name
    return out


# --------------------------------------------------------------------------- the study


class Study:
    """One invocation: the plan, the resolved configs, the ledger, and what each cell has."""

    def __init__(self, opts: StudyOptions):
        self.opts = opts
        self.plan: Plan = make_plan((*opts.tables, *opts.show))  # what the page shows
        self.work: Plan = make_plan(opts.tables)  # what this call trains and evaluates (--show: nothing)
        self.cfgs = {
            spec: resolve_config(spec, opts.scale, opts.configs_dir, opts.overrides, opts.device)
            for spec in self.plan.runs
        }  # every config is resolved and validated before anything trains
        self.ledger = Ledger.load(opts.ledger_path)
        self.grids_dir = self.ledger.folder / "cells"
        names = sorted(self.cfgs[spec].name for spec in self.work.runs)
        unknown = [n for n in opts.only if n not in names]
        if unknown:
            raise ValueError(
                f"--only {','.join(unknown)}: not a run of --tables {','.join(opts.tables)}; one of {', '.join(names)}"
            )

    def eopts(self, ev: EvalSpec) -> EvalOptions:
        return eval_options(ev, self.opts)

    def outcome(self, ev: EvalSpec) -> Outcome:
        """The cell as the ledger and the run folder have it now."""
        cfg = self.cfgs[ev.run]
        run, status = existing_run(cfg, self.opts.runs_dir)
        entry = self.ledger.cell(cell_key(ev, self.opts.scale), cfg, self.eopts(ev))
        return Outcome(ev, cfg, run, status, entry, self.opts.scale)

    def record_run(self, cfg: RunConfig, run: RunDir) -> bool:
        status = read_status(run)
        passes = count_passes(run, cfg)
        self.ledger.record_run(cfg, status, passes, planned_sample_passes(cfg), run.metrics(), str(run.path))
        self.ledger.save()
        return _finished(status)

    def record_eval(self, ev: EvalSpec, done: dict) -> None:
        cfg = self.cfgs[ev.run]
        key = cell_key(ev, self.opts.scale)
        self.ledger.record_cell(key, cfg, self.eopts(ev), done["result"], done["run"], done["grids"])
        self.ledger.save()

    def jobs(self) -> list[Job]:
        """Train jobs for unfinished runs (within ``max_runs``), eval jobs for cells not in the ledger."""
        opts, jobs, started = self.opts, [], 0
        for spec in self.job_order():
            todo = [ev for ev in self.work.evals_of(spec) if self.outcome(ev).entry is None]
            if not todo:
                continue  # every cell of the run is in the ledger: nothing to train or evaluate
            cfg = self.cfgs[spec]
            run, status = existing_run(cfg, opts.runs_dir)
            after: tuple[str, ...] = ()
            if not _finished(status):
                if opts.max_runs is not None and started >= opts.max_runs:
                    continue
                started += 1
                cores = 1 if cfg.mode == "centralized" or cfg.federation.workers == 1 else 2
                job = TrainJob(cfg, opts.runs_dir, opts.data_dir, opts.max_rounds_per_run, opts.progress and cores > 1)
                jobs.append(Job(f"train {spec.key}", cores, job))
                after = (f"train {spec.key}",)
            elif run is not None and cfg.name not in self.ledger.runs:
                self.record_run(cfg, run)
            for ev in todo:
                eopts = dataclasses.replace(self.eopts(ev), progress=False)
                if not opts.evaluate:
                    self.record_existing(ev)
                    continue
                stem = cell_key(ev, opts.scale).replace("/", "_")
                jobs.append(Job(f"eval {ev.key}", 1, EvalJob(cfg, opts.runs_dir, eopts, self.grids_dir, stem), after))
        return jobs

    def job_order(self) -> list[RunSpec]:
        """The runs this call works on (``--only``: those named), in the order their jobs start: those of the
        noise table first (until the seed noise is measured no FID claim can be decided), then plan order.
        Neither the order nor the selection changes a number."""
        runs = [spec for spec in self.work.runs if not self.opts.only or self.cfgs[spec].name in self.opts.only]
        return sorted(runs, key=lambda spec: "noise" not in self.work.tables_of(spec))

    def record_existing(self, ev: EvalSpec) -> None:
        """(--no-eval) An evaluation that already exists in the run folder goes into the ledger; nothing is computed."""
        o = self.outcome(ev)
        result = lookup_result(o.run, o.status, self.eopts(ev))
        if result is not None and o.run is not None:
            self.ledger.record_cell(cell_key(ev, self.opts.scale), o.cfg, self.eopts(ev), result, str(o.run.path), {})
            self.ledger.save()

    def on_done(self, job: Job, done: dict, bar: tqdm, write_page) -> bool:
        """After a job: record it in the ledger, rewrite the page; False when its run stopped early."""
        bar.update()
        if isinstance(job.payload, TrainJob):
            return self.record_run(job.payload.cfg, RunDir(Path(done["run"])))
        ev = next(e for e in self.plan.evals if f"eval {e.key}" == job.key)
        self.record_eval(ev, done)
        write_page(self)
        return True

    def record_baselines(self) -> None:
        """--baseline folders' evaluations go into the ledger (the ledger keeps those whose folders are gone)."""
        if self.opts.baselines:
            self.ledger.baselines.update(baseline_entries(self.opts.baselines))
            self.ledger.save()

    def ensure_floor(self) -> None:
        """The mean-image floor's numbers for this study's protocol, in the ledger (computed once)."""
        spec = self.plan.runs[0]
        cfg, eopts = self.cfgs[spec], self.eopts(EvalSpec(spec))
        identity = {
            "train_sizes": [g.train_size for g in cfg.data.groups],
            "test_size": eopts.test_size,
            "num_samples": eopts.num_samples,
            "fid": eopts.fid,
        }
        floor = self.ledger.floor
        if floor is not None and floor.get("identity") == identity and (floor.get("fid") or not eopts.fid):
            return
        data_dir = None if self.opts.data_dir is None else str(self.opts.data_dir)
        self.ledger.floor = {"identity": identity, **floor_entry(cfg, data_dir, eopts)}
        self.ledger.save()

    def outcomes(self) -> dict[EvalSpec, Outcome]:
        outcomes = {ev: self.outcome(ev) for ev in self.plan.evals}
        fill_from_fallback(outcomes, self.opts, self.ledger)
        return outcomes


def fill_from_fallback(outcomes: dict[EvalSpec, Outcome], opts: StudyOptions, ledger: Ledger) -> None:
    """Cells still pending take the result of ``opts.fallback_scale``: from the ledger, else an evaluated run folder.

    A ledger entry of that scale counts whatever its evaluation protocol (the cell is labelled with its scale).
    """
    scale = opts.fallback_scale
    if scale is None or scale == opts.scale:
        return
    for ev, o in outcomes.items():
        if o.done:
            continue
        cfg = resolve_config(ev.run, scale, opts.configs_dir, opts.overrides, opts.device)
        entry = ledger.cells.get(cell_key(ev, scale))
        if entry is not None and entry["config_sha256"] == config_digest(cfg):
            outcomes[ev] = Outcome(ev, cfg, None, ledger.runs.get(cfg.name), entry, scale)
            continue
        run, status = existing_run(cfg, opts.runs_dir)
        eopts = dataclasses.replace(eval_options(ev, opts, scale), fid_bootstrap=0)
        result = lookup_result(run, status, eopts)
        if result is not None:
            entry = {"numbers": numbers(result, cfg.group_names), "fid_interval": None, "grids": {}}
            outcomes[ev] = Outcome(ev, cfg, run, status, entry, scale)


def run_fission_study(opts: StudyOptions) -> Path:
    """Train, evaluate, record and write the page of the asked tables; return the page's path.

    Every config is resolved and validated before anything trains. ``opts.max_runs`` and
    ``opts.max_rounds_per_run`` bound the training of this call; the page then marks the cells
    still pending, and rerunning the same command continues where the last call stopped.
    """
    start = time.perf_counter()
    study = Study(opts)
    jobs = study.jobs()

    def page(s: Study) -> Path:
        return write_page(s.plan, s.outcomes(), s.ledger, opts, time.perf_counter() - start)

    if opts.evaluate and opts.fid and any(job.key.startswith("eval ") for job in jobs):
        resolve_inception_path(opts.inception)  # missing: say so now, not after hours of training
    study.record_baselines()
    if opts.evaluate:
        study.ensure_floor()  # cheap (the test statistics only if already cached): the page has it from now on
    page(study)  # the page says at once what this command does and what the ledger already holds
    with tqdm(
        total=len(jobs), desc=f"fission study ({opts.scale.label})", unit="job", disable=not opts.progress
    ) as bar:
        run_jobs(jobs, execute, lambda job, done: study.on_done(job, done, bar, page), cores=opts.jobs)
    if opts.evaluate:
        study.ensure_floor()
    return page(study)
