"""Pieces every study shares: reuse finished runs, resume stopped ones, reuse evaluations.

A study names its runs by configuration, not by folder: a run folder under ``runs_dir`` is the
study's run when its saved config equals the study's config, apart from settings that never
change a result (:data:`IGNORED_KEYS`: where the data live, whether to download, torch
threads). A finished match is reused, a stopped or interrupted one is resumed from its last
checkpoint, and otherwise a new folder ``<config name>-<config digest>`` is trained. An
``eval.json`` is reused when it was computed from the run's current weights with the same
sample counts and options. A run whose status says ``running`` is taken for one that was
killed and is resumed: do not point two studies at the same ``runs_dir`` at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from fissionvae import api
from fissionvae.config import ConfigError, PrivacyConfig, RunConfig, load_config
from fissionvae.evaluation.evaluate import EvalOptions, evaluate_run, weights_digest
from fissionvae.runs import RunDir

# (section, key) pairs that do not change what a run computes
# train.device: where it runs (float results differ only in the last bits between CPU and GPU)
# federation.workers: how many processes train a round's clients (results do not depend on it)
IGNORED_KEYS = (
    ("data", "dir"),
    ("data", "download"),
    ("federation", "threads"),
    ("federation", "workers"),
    ("train", "device"),
)
# EvalOptions fields that change the numbers in eval.json
EVAL_KEYS = (
    "iw_samples",
    "test_size",
    "pathway",
    "fid",
    "inception",
    "is_classifier",
    "classifier_epochs",
    "prior_swap",
)


def comparable(cfg: RunConfig) -> dict:
    """The config as a dict without the :data:`IGNORED_KEYS`.

    Parameters
    ----------
    cfg
        A resolved run configuration.

    Returns
    -------
    dict
        What two runs must share to compute the same thing.
    """
    out = cfg.to_dict()
    for section, key in IGNORED_KEYS:
        out[section].pop(key, None)
    _drop_later_defaults(out)
    return out


# Keys added after results were recorded, at the value that computes what runs did before the key
# existed: comparable() leaves them out there, so those results (ledger cells, run folders) keep
# their identity. A new config key whose default changes nothing belongs here.
LATER_DEFAULTS: dict[str, dict[str, object]] = {
    "federation": {"aggregator": "fedavg", "trim_fraction": 0.1, "clip_norm": None, "max_failed_rounds": 3},
    "decoder": {"output_norm": True},  # model.decoder and every data.groups[*].decoder
}
GAUSSIAN_KEYS = ("gaussian_std", "gaussian_std_init", "gaussian_std_lr")  # no effect unless likelihood: gaussian


def _drop_later_defaults(out: dict) -> None:
    """Remove from ``out`` (a config dict) what :data:`LATER_DEFAULTS` and the later sections leave out."""

    def drop(section: object, defaults: dict[str, object]) -> None:
        if isinstance(section, dict):
            for key, default in defaults.items():
                if key in section and section[key] == default:
                    del section[key]

    if out.get("privacy") == dataclasses.asdict(PrivacyConfig()):
        del out["privacy"]  # a whole section added later: runs made before it keep their identity
    drop(out.get("federation"), LATER_DEFAULTS["federation"])
    model = out.get("model", {})
    for decoder in [model.get("decoder")] + [g.get("decoder") for g in out.get("data", {}).get("groups", [])]:
        drop(decoder, LATER_DEFAULTS["decoder"])
    if model.get("likelihood") != "gaussian":
        for key in GAUSSIAN_KEYS:
            model.pop(key, None)


def config_digest(cfg: RunConfig) -> str:
    """sha256 (hex) of :func:`comparable`: the identity of what a run computes."""
    return hashlib.sha256(json.dumps(comparable(cfg), sort_keys=True).encode()).hexdigest()


def read_status(run: RunDir) -> dict:
    """The run's status.json, or a 'stopped at round 0' status when it was never written."""
    if not run.status_path.is_file():
        return {"state": "stopped", "rounds_done": 0}
    return json.loads(run.status_path.read_text())


def matching_runs(runs_dir: str | Path, cfg: RunConfig) -> list[tuple[RunDir, dict]]:
    """Run folders under ``runs_dir`` whose config matches ``cfg``, best first.

    Parameters
    ----------
    runs_dir
        Folder holding run folders (missing: no matches).
    cfg
        The wanted configuration.

    Returns
    -------
    list of (RunDir, status dict)
        Finished runs first, then by rounds done (most first), then by folder name.
    """
    root, want, found = Path(runs_dir), comparable(cfg), []
    for path in sorted(root.glob("*/config.yaml")) if root.is_dir() else []:
        run = RunDir(path.parent)
        try:
            same = comparable(run.load_config()) == want
        except ConfigError:
            continue  # a run of an older or foreign config format is never ours
        if same:
            found.append((run, read_status(run)))
    return sorted(
        found, key=lambda rs: (rs[1].get("state") != "finished", -rs[1].get("rounds_done", 0), rs[0].path.name)
    )


def ensure_trained(
    cfg: RunConfig,
    runs_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    max_rounds: int | None = None,
) -> RunDir:
    """A finished run of ``cfg``: reused, resumed, or trained from scratch.

    Parameters
    ----------
    cfg
        The run configuration.
    runs_dir
        Where run folders are looked for and created.
    data_dir
        Data folder passed to the engine (None: the config's, else the defaults).
    progress
        Show the engine's progress bars.
    max_rounds
        Train at most this many rounds in this call (None: to the end); the run is then
        unfinished when more were needed (see :func:`read_status`), and a later call resumes it.

    Returns
    -------
    RunDir
        The run folder, its status ``finished`` (unless ``max_rounds`` stopped it).
    """
    matches = matching_runs(runs_dir, cfg)
    if matches:
        run, status = matches[0]
        if status.get("state") != "finished":
            overrides = (
                [f"train.device={cfg.train.device}"] if cfg.train.device != run.load_config().train.device else []
            )
            api.resume(run.path, overrides, data_dir=data_dir, max_rounds=max_rounds, progress=progress)
        return run
    name = f"{cfg.name}-{config_digest(cfg)[:8]}"
    return api.train_from_config(
        cfg, runs_dir=runs_dir, name=name, data_dir=data_dir, max_rounds=max_rounds, progress=progress
    )


# an eval.json written before an option existed was computed with that option's default
_EVAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EvalOptions)}


def eval_matches(result: dict, run: RunDir, opts: EvalOptions) -> bool:
    """Whether a saved eval.json answers ``opts`` for the run's current weights."""
    saved = result.get("options", {})
    wanted_samples = opts.num_samples or result.get("eval_images")
    return (
        result.get("num_samples") == wanted_samples
        and all(saved.get(k, _EVAL_DEFAULTS[k]) == getattr(opts, k) for k in EVAL_KEYS)
        and result.get("weights_sha256") == weights_digest(run.load_state().weights)
    )


def ensure_evaluated(run: RunDir, opts: EvalOptions) -> dict:
    """The run's evaluation for ``opts``: its eval.json when that matches, else a fresh one.

    (``<run>/<opts.result_name>.json`` rather than eval.json when the options name another file.)

    Parameters
    ----------
    run
        A finished run folder.
    opts
        Evaluation options (sample counts, IW samples, FID on/off, ...).

    Returns
    -------
    dict
        The eval.json content.
    """
    path = run.path / f"{opts.result_name}.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if eval_matches(result, run, opts):
            return result
    return evaluate_run(run.path, opts)


def load_study_config(path: str | Path) -> RunConfig:
    """Load one of a study's config files (a clear error when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"study config {path} not found; pass --configs-dir pointing at the repository's configs/<study>/ folder"
        )
    return load_config(path)
