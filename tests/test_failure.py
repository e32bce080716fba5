"""A run that cannot go on ends in a clear state: failed rounds, a dead worker, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tests.helpers import REPO, assert_gone, children, descendants, tiny_config

from fissionvae.cli import main as cli_main
from fissionvae.config import save_config
from fissionvae.federation.client import ClientResult
from fissionvae.federation.engine import FAILED_STREAK, Federation, RunFailed, train
from fissionvae.federation.state import load_state
from fissionvae.federation.workers import WorkerPool
from fissionvae.runs import RunDir


class EchoDispatcher:
    """Replies at once with the weights it was sent (NaN-ed in the rounds listed in ``bad``): no training."""

    def __init__(self, fed: Federation, bad: set[int]):
        self.fed, self.bad = fed, bad

    def __call__(self, weights, round_index, participants, spec, client_states):
        scale = float("nan") if round_index in self.bad else 1.0
        return [
            ClientResult(
                cid,
                self.fed.client_groups[cid],
                self.fed.client_sizes[cid],
                {
                    k: weights[k] * scale if weights[k].is_floating_point() else weights[k]
                    for k in self.fed.owned_keys(cid)
                },
                {"loss": 1.0},
            )
            for cid in participants
        ]


def _status(run: RunDir) -> dict:
    return json.loads(run.status_path.read_text())


def test_consecutive_failed_rounds_stop_the_run_and_the_streak_survives_resume(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0, "max_failed_rounds": 2}, train={"rounds": 6})
    fed = Federation.from_config(cfg, with_clients=False)
    # round 1 fails, round 2 recovers (the streak resets), rounds 3 and 4 fail: stop after round 4
    dispatch = EchoDispatcher(fed, bad={0, 2, 3, 4, 5})
    run = RunDir.create(tmp_path, cfg, "straight")
    with pytest.raises(RunFailed, match=r"every reply was rejected in 2 rounds in a row \(rounds 3-4"):
        train(cfg, run, progress=False, federation=fed, dispatch=dispatch)
    status = _status(run)
    assert status["state"] == "failed" and status["rounds_done"] == 4 and "non-finite" in status["error"]
    rounds = [m for m in run.metrics() if m["type"] == "round"]
    assert [m["failed"] for m in rounds] == [True, False, True, True]
    assert all(len(m["rejected"]) == 4 and m["empty"] for m in rounds if m["failed"])
    initial = fed.initial_state().weights
    state = load_state(run.checkpoint_path)
    assert state.extra[FAILED_STREAK] == 2 and all(torch.equal(state.weights[k], initial[k]) for k in initial)
    # interrupted after round 3 (streak 1), the resumed run stops at the same round
    split = RunDir.create(tmp_path, cfg, "split")
    train(cfg, split, max_rounds=3, progress=False, federation=fed, dispatch=dispatch)
    assert _status(split)["state"] == "stopped" and load_state(split.checkpoint_path).extra[FAILED_STREAK] == 1
    with pytest.raises(RunFailed, match="rounds 3-4"):
        train(cfg, split, progress=False, federation=fed, dispatch=dispatch)
    assert _status(split)["rounds_done"] == 4
    # a healthy run stores no streak at all (old checkpoints stay as they were)
    fine = RunDir.create(tmp_path, cfg, "fine")
    assert (
        FAILED_STREAK
        not in train(cfg, fine, max_rounds=2, progress=False, federation=fed, dispatch=EchoDispatcher(fed, set())).extra
    )


ROUNDS = 100_000  # a run that cannot finish before the test interrupts it


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal gives it (default action, not blocked).

    A child inherits an ignored SIGINT, and Python then installs no KeyboardInterrupt handler; some
    library used earlier in the same pytest process can leave SIGINT ignored or blocked, and the
    child then trains on through the test's Ctrl-C (seen twice on CI: exit 0 after all rounds, and a
    timeout). A user's Ctrl-C comes from a terminal, where SIGINT has its default action.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _config_file(tmp_path, shared_data_dir, **sections):
    path = tmp_path / "tiny.yaml"
    save_config(tiny_config(shared_data_dir, **sections), path)
    return path


def test_infinite_learning_rate_fails_clearly_from_the_cli(tmp_path, shared_data_dir, capsys):
    path = _config_file(
        tmp_path, shared_data_dir, federation={"participation": 1.0, "workers": 1, "max_failed_rounds": 2}
    )
    argv = ["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "inf", "--no-progress"]
    code = cli_main([*argv, "--set", "train.lr=.inf"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    run = tmp_path / "runs" / "inf"
    if run.exists():  # the config was accepted: the run trained nothing and says so
        assert "every reply was rejected in 2 rounds" in err
        assert _status(RunDir(run))["state"] == "failed"


def test_a_killed_worker_is_a_one_line_error_and_status_failed(tmp_path, shared_data_dir, capsys, monkeypatch):
    path = _config_file(tmp_path, shared_data_dir, federation={"participation": 1.0, "workers": 2})
    started: list[int] = []
    original = WorkerPool.__init__

    def start_then_kill_one(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.extend(self.pids)
        os.kill(self.pids[1], signal.SIGKILL)  # a real worker process, killed before its first task

    monkeypatch.setattr(WorkerPool, "__init__", start_then_kill_one)
    before = children()
    argv = ["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "dead", "--no-progress"]
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "died" in err and "Traceback" not in err
    status = _status(RunDir(tmp_path / "runs" / "dead"))
    assert status["state"] == "failed" and "worker 1" in status["error"] and status["rounds_done"] == 0
    assert len(started) == 2
    assert_gone(started, before)


def test_ctrl_c_stops_cleanly_with_status_stopped_and_no_worker_left(tmp_path, shared_data_dir):
    path = _config_file(
        tmp_path, shared_data_dir, federation={"participation": 1.0, "workers": 2}, train={"rounds": ROUNDS}
    )
    env = os.environ | {"PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = ["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "int", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fissionvae.cli", *argv],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    run = RunDir(tmp_path / "runs" / "int")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if run.status_path.is_file() and _status(run)["rounds_done"] >= 1:
                break
            time.sleep(0.2)
        workers = descendants(proc.pid)
        assert proc.poll() is None and len(workers) >= 2, "the run did not get going"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    status = _status(run)
    assert status["state"] == "stopped" and 1 <= status["rounds_done"] < ROUNDS
    time.sleep(0.5)
    assert not any(os.path.exists(f"/proc/{p}") for p in workers), "a worker process outlived Ctrl-C"
