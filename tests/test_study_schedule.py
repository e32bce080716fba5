"""The two-core study scheduler: one-core jobs side by side, all-core jobs alone, same numbers as serial."""

import json
import os
import time
from pathlib import Path

import pytest

from fissionvae.evaluation.report import PAPER_TABLE3
from fissionvae.studies import fission
from fissionvae.studies.fission_options import Scale, StudyOptions
from fissionvae.studies.fission_plan import EvalSpec, Plan, Row, RunSpec, TableSpec
from fissionvae.studies.schedule import Job, run_jobs


def stamp(payload: tuple) -> dict:
    """A fake job: (folder, name, seconds[, wait_for]).

    It touches ``<name>.started``, waits (up to 20 s) until the file ``wait_for`` exists when one is
    given, sleeps ``seconds``, and records its start and end time, process and whether the file
    came; the job named "boom" fails.
    """
    folder, name, seconds, *rest = payload
    Path(folder, f"{name}.started").touch()
    if name == "boom":
        raise RuntimeError("job boom failed")
    start, found = time.time(), None
    if rest:
        deadline = start + 20.0
        while not Path(folder, rest[0]).exists() and time.time() < deadline:
            time.sleep(0.02)
        found = Path(folder, rest[0]).exists()
    time.sleep(seconds)
    record = {"name": name, "start": start, "end": time.time(), "pid": os.getpid(), "found": found}
    Path(folder, f"{name}.json").write_text(json.dumps(record))
    return record


def test_one_core_jobs_run_two_at_a_time_and_an_all_core_job_takes_the_first_free_core(tmp_path):
    jobs = [
        Job("a", 1, (str(tmp_path), "a", 0.0, "fed.started")),  # ends only once fed has started
        Job("b", 1, (str(tmp_path), "b", 0.3)),
        Job("fed", 2, (str(tmp_path), "fed", 0.0, "a.recorded")),  # ends only once a's result is recorded
        Job("eval-fed", 1, (str(tmp_path), "eval-fed", 0.1), after=("fed",)),
        Job("c", 1, (str(tmp_path), "c", 0.1)),
        Job("stopped", 1, (str(tmp_path), "stopped", 0.1)),
        Job("after-stopped", 1, (str(tmp_path), "after-stopped", 0.1), after=("stopped",)),
    ]
    seen = []

    def on_done(job: Job, result: dict) -> bool:
        seen.append(job.key)
        (tmp_path / f"{job.key}.recorded").touch()
        return job.key != "stopped"  # e.g. a run that stopped before its last round: its evaluation is skipped

    ran = run_jobs(jobs, stamp, on_done, cores=2)
    rec = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(ran) == sorted(seen) == ["a", "b", "c", "eval-fed", "fed", "stopped"] and "after-stopped" not in rec
    assert rec["b"]["start"] < rec["a"]["end"]  # side by side
    assert rec["fed"]["pid"] == os.getpid() and rec["a"]["pid"] != os.getpid()  # all-core job here, others in workers
    # the all-core job waits for a free core (b's), then starts beside the one-core job still running (a) ...
    assert rec["a"]["found"] and rec["b"]["end"] <= rec["fed"]["start"] < rec["a"]["end"]
    # ... a's result is recorded while it runs, and nothing new starts until it is done
    assert rec["fed"]["found"] and seen.index("a") < seen.index("fed")
    assert all(rec[k]["start"] >= rec["fed"]["end"] for k in ("eval-fed", "c", "stopped"))


def test_serial_runs_one_job_at_a_time_and_errors_reach_the_caller(tmp_path):
    jobs = [Job(n, 1, (str(tmp_path), n, 0.3)) for n in ("a", "b")]
    run_jobs(jobs, stamp, lambda job, result: True, cores=1)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["end"] <= b["start"]
    with pytest.raises(RuntimeError, match="job boom failed"):
        run_jobs([Job("boom", 1, (str(tmp_path), "boom", 0.0))], stamp, lambda job, result: True)
    with pytest.raises(ValueError, match="never run"):
        run_jobs([Job("x", 1, (str(tmp_path), "x", 0.0), after=("missing",))], stamp, lambda job, result: True)
    with pytest.raises(ValueError, match="--jobs 0"):
        run_jobs([], stamp, lambda job, result: True, cores=0)


def test_a_failed_job_is_reported_at_once_and_the_running_ones_finish_into_on_done(tmp_path, capfd):
    jobs = [
        Job("long", 1, (str(tmp_path), "long", 1.0, "boom.started")),
        Job("boom", 1, (str(tmp_path), "boom", 0.0)),
        Job("later", 1, (str(tmp_path), "later", 0.1)),
    ]
    seen = {}

    def on_done(job: Job, result: dict) -> bool:
        seen[job.key] = capfd.readouterr().err  # what stderr said before this job's result arrived
        return True

    with pytest.raises(RuntimeError, match="job boom failed"):
        run_jobs(jobs, stamp, on_done, cores=2)
    assert list(seen) == ["long"]  # recorded as usual; "later" never started
    assert "job boom failed: job boom failed; no new job starts, 1 running finish first" in seen["long"]
    assert not (tmp_path / "later.json").exists()


def _two_centralised_runs(tables=None) -> Plan:
    rows = [
        Row(
            label,
            {"centralized": EvalSpec(RunSpec(stem, "centralized"))},
            {"centralized": PAPER_TABLE3[family]["centralized"]},
        )
        for stem, label, family in (("fedvae", "FedVAE", "FedVAE"), ("fission_d", "FissionVAE+D", "FissionVAE+D"))
    ]
    return Plan([TableSpec("3", "two centralised runs", ("centralized",), rows)])


def test_a_scheduled_study_gives_the_numbers_of_a_serial_one(tmp_path, shared_data_dir, monkeypatch):
    """Two centralised runs and their evaluations, side by side (--jobs 2) and one after another (--jobs 1)."""
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fission, "make_plan", _two_centralised_runs)
    ledgers = {}
    for jobs in (2, 1):
        opts = StudyOptions(
            tables=("3",),
            scale=Scale(tiny=True),
            runs_dir=tmp_path / f"runs{jobs}",
            out=tmp_path / f"page{jobs}",
            data_dir=shared_data_dir,
            fid=False,
            progress=False,
            jobs=jobs,
        )
        fission.run_fission_study(opts)
        ledgers[jobs] = json.loads((tmp_path / f"page{jobs}" / "mixed_mnist" / "study.json").read_text())
    for key in ("tiny/fedvae/centralized/eval", "tiny/fission_d/centralized/eval"):
        a, b = (ledgers[j]["cells"][key]["numbers"] for j in (2, 1))
        assert a.pop("eval_seconds") > 0 and b.pop("eval_seconds") > 0
        assert a == b  # every number bit-identical (floats compared exactly)
    weights = {}
    for jobs in (2, 1):
        for status in (tmp_path / f"runs{jobs}").glob("*/status.json"):
            from fissionvae.evaluation.evaluate import weights_digest
            from fissionvae.runs import RunDir

            weights.setdefault(status.parent.name, set()).add(
                weights_digest(RunDir(status.parent).load_state().weights)
            )
    assert len(weights) == 2 and all(len(v) == 1 for v in weights.values())
    for jobs in (2, 1):
        assert {r["state"] for r in ledgers[jobs]["runs"].values()} == {"finished"}
