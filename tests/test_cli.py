"""The fissionvae command line, end to end on a tiny real federation."""

import json

import torch
import yaml
from tests.helpers import tiny_config

from fissionvae.cli import main
from fissionvae.federation.state import load_state


def write_config(path, data_dir, **sections):
    path.write_text(yaml.safe_dump(tiny_config(data_dir, **sections).to_dict()))
    return path


def test_train_sample_resume(tmp_path, shared_data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir)
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--set",
                "train.rounds=2",
                "--runs-dir",
                str(runs),
                "--name",
                "r",
                "--no-progress",
            ]
        )
        == 0
    )
    run = runs / "r"
    assert load_state(run / "checkpoints" / "latest.pt").round == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["rounds"] == 2
    # extend the finished run by two rounds
    assert main(["train", "--resume", str(run), "--set", "train.rounds=4", "--no-progress"]) == 0
    assert load_state(run / "checkpoints" / "latest.pt").round == 4
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    # per-group generation, also through another group's prior
    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--group", "fashion", "-n", "16", "--out", str(out)]) == 0
    assert out.stat().st_size > 500
    assert main(["sample", str(run), "--group", "mnist", "-n", "4", "--out", str(out), "--prior-group", "fashion"]) == 0
    # a resume may not change what the run is
    assert main(["train", "--resume", str(run), "--set", "model.prior=one-hot"]) == 2
    assert "cannot be changed when resuming" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_a_message(tmp_path, shared_data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir)
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=3", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "unknown config key(s): train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # validated before anything is written
    assert main(["sample", str(tmp_path), "--group", "x", "--out", str(tmp_path / "a.png")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_centralized_override_and_config_command(tmp_path, shared_data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir)
    assert main(["config", str(cfg), "--set", "mode=centralized"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["mode"] == "centralized"
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--set",
                "mode=centralized",
                "--set",
                "train.centralized_epochs=1",
                "--runs-dir",
                str(runs),
                "--name",
                "c",
                "--no-progress",
            ]
        )
        == 0
    )
    state = load_state(runs / "c" / "checkpoints" / "latest.pt")
    assert state.round == 1 and state.config["mode"] == "centralized"
    assert all(torch.isfinite(v).all() for v in state.weights.values() if v.is_floating_point())
