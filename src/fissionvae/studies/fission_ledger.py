"""The results ledger of the FissionVAE study: ``<out>/mixed_mnist/study.json``, the source of truth.

As soon as an evaluation finishes, its numbers, sample counts, wall times, the CPU that ran it,
the bootstrap interval of its FID and its small generation PNGs go into the ledger folder, written
atomically; as soon as a run finishes, its training wall time, sample passes and per-round test
loss go in too. The page is rebuilt from the ledger on every invocation, so a cell whose entry
is in the ledger is done even when its run folder is gone: nothing is retrained or re-evaluated.
Checkpoints are never in the ledger.

An entry answers a cell when its run identity (the sha256 of the run's comparable config,
:func:`fissionvae.studies.common.config_digest`) and its evaluation identity (sample counts and
the options of :data:`fissionvae.studies.common.EVAL_KEYS`) equal the wanted ones.

Format (``format`` = :data:`LEDGER_FORMAT`)::

    {"format": 2,
     "cells": {"<eval key>": {"config", "config_sha256", "scale", "eval": {identity}, "numbers": {...},
                              "fid_interval": [lo, hi] | null, "cpu", "written", "run_folder",
                              "same_noise_as_unswapped", "grids": {"<group>": "<png>"}}},
     "runs": {"<config name>": {"config_sha256", "state", "rounds_done", "rounds_planned",
                                "wall_seconds", "passes", "planned_passes", "cpu",
                                "loss": {"<group>": [[round, nats]]}}},
     "floor": {...} | absent,
     "baselines": {"<model>": {"paper": {...}, "modes": {"<mode>": {"fid", "is", "nll", "folder"}}}}}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.evaluation.options import EvalOptions
from fissionvae.io import atomic_write_json
from fissionvae.runs import RunDir
from fissionvae.studies.common import EVAL_KEYS, config_digest
from fissionvae.studies.fission_options import Scale
from fissionvae.studies.fission_plan import EvalSpec

LEDGER_FORMAT = 2
IDENTITY_KEYS = ("num_samples", *EVAL_KEYS)


class LedgerError(ValueError):
    """A ledger file that is not one this code wrote."""


@dataclass
class Outcome:
    """What the study has for one evaluation cell: the run (maybe unfinished or absent) and its ledger entry."""

    spec: EvalSpec
    cfg: RunConfig
    run: RunDir | None = None
    status: dict | None = None
    entry: dict | None = None  # the ledger entry; None while pending
    scale: Scale = field(default_factory=Scale)  # where the result came from (the study's or the fallback scale)

    @property
    def done(self) -> bool:
        return self.entry is not None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or 'unknown'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def eval_identity(eopts: EvalOptions) -> dict:
    """What an evaluation's numbers depend on (besides the run's weights)."""
    return {k: getattr(eopts, k) for k in IDENTITY_KEYS}


def numbers(result: dict, groups: list[str] | None = None) -> dict:
    """The page's numbers of one evaluation result (eval json); per-group dicts in ``groups`` order."""
    fid, cls, nll = result.get("fid"), result["classifier"], result["nll"]
    skipped = "skipped" in nll
    out = {
        "fid": fid["overall"] if fid else None,
        "fid_groups": {g: v["fid"] for g, v in fid["per_group"].items()} if fid else {},
        "is": cls["is_domain"]["mean"],
        "is_groups": {g: v.get("is_domain") for g, v in cls["per_group"].items()},
        "purity": {g: v["purity"] for g, v in cls["per_group"].items()},
        "nll": None if skipped else nll["overall"]["neg_elbo"]["nats_per_dim"],
        "nll_groups": {} if skipped else {g: v["neg_elbo"]["nats_per_dim"] for g, v in nll["per_group"].items()},
        "iw_nll": None if skipped else nll["overall"]["iw"]["nats_per_dim"],
        "iw_k": None if skipped else nll["overall"]["iw"]["k"],
        "nll_images": None if skipped else nll["overall"]["images"],
        "generated": result["num_samples"],
        "samples_per_group": result.get("samples_per_group", {}),
        "fid_real": fid["real"] if fid else None,
        "reduced_count": result["reduced"],
        "eval_seconds": result.get("seconds"),
        "pathway": result.get("pathway"),
        "prior_swap": result.get("prior_swap", False),
    }
    for key in ("fid_groups", "is_groups", "purity", "nll_groups"):
        d = out[key]
        out[key] = {g: d[g] for g in (groups or []) if g in d} | d
    return out


def loss_series(metrics: list[dict], groups: list[str]) -> dict[str, list[list[float]]]:
    """Per-group test negative ELBO per round, from a run's metrics.jsonl records."""
    rounds = [m for m in metrics if m.get("type") == "round"]
    return {g: [[m["round"], m[f"test/{g}/neg_elbo"]] for m in rounds if f"test/{g}/neg_elbo" in m] for g in groups}


def samples_per_second(run_entry: dict) -> float | None:
    """A ledger run entry's training rate (sample passes over wall seconds), None before it has both."""
    passes, wall = run_entry.get("passes"), run_entry.get("wall_seconds") or 0.0
    return passes / wall if passes and wall > 0 else None


_ENTRY_KEYS = ("format", "cells", "runs", "floor", "baselines")  # the rest of a ledger file is page metadata


@dataclass
class Ledger:
    """The study's ledger file and the folder beside it that holds its PNGs."""

    path: Path
    cells: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    floor: dict | None = None
    baselines: dict[str, dict] = field(default_factory=dict)  # other models' Table 3 rows (--baseline)
    meta: dict = field(default_factory=dict)  # the page's metadata (command, claims, totals...) of the last page write

    @property
    def folder(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        """The ledger at ``path`` (an empty one when the file does not exist); a clear error for a foreign file."""
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LedgerError(f"{path}: not a readable study ledger ({e})") from None
        if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LedgerError(f"{path}: ledger format {found!r}, expected {LEDGER_FORMAT}")
        cells, runs = data.get("cells"), data.get("runs")
        if not isinstance(cells, dict) or not isinstance(runs, dict):
            raise LedgerError(f"{path}: 'cells' and 'runs' must be objects")
        for key, entry in cells.items():
            if not isinstance(entry, dict) or not {"config_sha256", "eval", "numbers"} <= set(entry):
                raise LedgerError(f"{path}: cell {key!r} lacks config_sha256, eval or numbers")
        meta = {k: v for k, v in data.items() if k not in _ENTRY_KEYS}
        return cls(path, cells, runs, data.get("floor"), data.get("baselines", {}), meta)

    def save(self, extra: dict | None = None) -> Path:
        """Write the ledger atomically (``extra``: new page metadata; without it the last page's is kept).

        A save between two page writes (a run that finished training, a cell just evaluated) must
        not drop the claims and totals that the committed page was written from.
        """
        if extra is not None:
            self.meta = dict(extra)
        data = {"format": LEDGER_FORMAT, **self.meta, "cells": self.cells, "runs": self.runs}
        data["baselines"] = self.baselines
        if self.floor is not None:
            data["floor"] = self.floor
        return atomic_write_json(self.path, data)

    def cell(self, key: str, cfg: RunConfig, eopts: EvalOptions) -> dict | None:
        """The entry of cell ``key`` when it answers ``cfg`` evaluated with ``eopts``, else None."""
        entry = self.cells.get(key)
        if entry is None or entry["config_sha256"] != config_digest(cfg):
            return None
        return entry if entry["eval"] == json.loads(json.dumps(eval_identity(eopts))) else None

    def run(self, cfg: RunConfig) -> dict | None:
        """The finished-run entry of ``cfg``, or None."""
        entry = self.runs.get(cfg.name)
        return entry if entry is not None and entry.get("config_sha256") == config_digest(cfg) else None

    def training_rates(self, cpu: str | None = None) -> dict[str, list[float]]:
        """Samples/s of the ledger's finished runs by mode (``federated``, ``centralized``); only the
        runs trained on ``cpu`` (a :func:`cpu_model` name) when given."""
        rates: dict[str, list[float]] = {}
        for entry in self.runs.values():
            rate = samples_per_second(entry)
            if cpu is not None and entry.get("cpu") != cpu:
                continue
            if rate is not None and entry.get("state") == "finished":
                rates.setdefault(str(entry.get("mode")), []).append(rate)
        return rates

    def evaluation_seconds(self, generated: int, cpu: str | None = None) -> list[float]:
        """Wall seconds of the ledger's evaluations that generated ``generated`` images; only those
        run on ``cpu`` (a :func:`cpu_model` name) when given."""
        seconds = []
        for entry in self.cells.values():
            nums = entry.get("numbers") or {}
            if nums.get("generated") != generated or not nums.get("eval_seconds"):
                continue
            if cpu is None or entry.get("cpu") == cpu:
                seconds.append(float(nums["eval_seconds"]))
        return seconds

    def cpus(self) -> list[str]:
        """The CPUs that trained the ledger's runs."""
        return sorted({str(e["cpu"]) for e in self.runs.values() if e.get("cpu")})

    def record_cell(
        self, key: str, cfg: RunConfig, eopts: EvalOptions, result: dict, run_folder: str, grids: dict[str, str]
    ) -> dict:
        """Put a finished evaluation into the ledger (call :meth:`save` to write it)."""
        interval = (result.get("fid") or {}).get("bootstrap", {}).get("interval")
        self.cells[key] = {
            "config": cfg.name,
            "config_sha256": config_digest(cfg),
            "eval": json.loads(json.dumps(eval_identity(eopts))),
            "numbers": numbers(result, cfg.group_names),
            "fid_interval": interval,
            "same_noise_as_unswapped": bool(result.get("same_noise_as_unswapped")),
            "cpu": cpu_model(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "run_folder": run_folder,
            "grids": grids,
        }
        return self.cells[key]

    def record_run(
        self, cfg: RunConfig, status: dict, passes: int, planned: float, metrics: list[dict], run_folder: str
    ) -> dict:
        """Put a run's training record into the ledger (finished or not; call :meth:`save` to write it)."""
        self.runs[cfg.name] = {
            "config_sha256": config_digest(cfg),
            "mode": cfg.mode,
            "state": status.get("state"),
            "rounds_done": status.get("rounds_done", 0),
            "rounds_planned": cfg.effective_rounds,
            "wall_seconds": float(status.get("wall_seconds", 0.0)),
            "passes": passes,
            "planned_passes": planned,
            "cpu": cpu_model(),
            "run_folder": run_folder,
            "loss": loss_series(metrics, cfg.group_names),
        }
        return self.runs[cfg.name]
