"""Every bad input of issue 19 through the CLI: one-line error naming the file or option, non-zero exit, no file
written or changed (docs/engine.md, "Bad input")."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tests.helpers import tiny_config

from fissionvae import api, cli
from fissionvae.federation import engine
from fissionvae.federation.state import load_state, save_state


def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under ``roots``: compared before and after a command."""
    out: dict[str, bytes | None] = {}
    for root in roots:
        out[str(root)] = None if root.is_dir() else (root.read_bytes() if root.exists() else b"<absent>")
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            out[str(path)] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return out


def fails_cleanly(argv: list[str], capsys, *watched: Path, status: int = 2) -> str:
    """Run the CLI; assert the exit status, one stderr line, no traceback, no change under ``watched``."""
    before = snapshot(*watched)
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("fissionvae: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert snapshot(*watched) == before
    return err


def write_config(path: Path, data_dir: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(data_dir, **sections).to_dict()))
    return path


def train_argv(cfg: Path, runs: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(cfg), "--runs-dir", str(runs), "--no-progress", *extra]


@pytest.fixture
def setup(tmp_path, shared_data_dir):
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir)
    return cfg, tmp_path / "runs"


# --------------------------------------------------------------------------- data


def test_missing_data_file_with_download_on(tmp_path, shared_data_dir, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("FISSIONVAE_MIRROR", (tmp_path / "no-mirror").as_uri())
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir, data={"dir": str(data), "download": True})
    err = fails_cleanly(train_argv(cfg, tmp_path / "runs"), capsys, data, tmp_path / "runs")
    assert f"could not download {data / 'mnist' / 'train-images-idx3-ubyte.gz'}" in err
    assert "every mirror failed" in err and not (tmp_path / "runs").exists() and not (data / "mnist").exists()


def mirror_of_shared(tmp_path: Path, shared: Path) -> Path:
    """A data folder of links to the shared files, so one file can be replaced."""
    data = tmp_path / "data"
    for ds in ("mnist", "fashion-mnist"):
        (data / ds).mkdir(parents=True)
        for f in (shared / ds).iterdir():
            (data / ds / f.name).symlink_to(f)
    return data


def test_directory_where_a_data_file_should_be(tmp_path, shared_data_dir, capsys):
    data = mirror_of_shared(tmp_path, shared_data_dir)
    target = data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    target.mkdir()
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir, data={"dir": str(data)})
    err = fails_cleanly(train_argv(cfg, tmp_path / "runs"), capsys, data, tmp_path / "runs")
    assert f"{target}: is a folder where the data file should be" in err


def test_changed_idx_type_byte(tmp_path, shared_data_dir, capsys):
    data = mirror_of_shared(tmp_path, shared_data_dir)
    target = data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    target.unlink()
    content[2] = 0x0B  # uint8 -> int16: the payload no longer fits the header
    target.write_bytes(gzip.compress(bytes(content)))
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir, data={"dir": str(data)})
    err = fails_cleanly(train_argv(cfg, tmp_path / "runs"), capsys, data, tmp_path / "runs")
    assert f"{target}: wrong IDX type byte 0x0B (int16)" in err and "truncated" not in err


# --------------------------------------------------------------------------- config and options


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.encoder_hidden=[64, -8]", "model.encoder_hidden[1]: a layer width must be >= 1, got -8"),
        ("model.decoder.hidden=[0]", "model.decoder.hidden[0]: a layer width must be >= 1, got 0"),
        ("data.groups.0.train_size=70000", "data.groups[0].train_size: 70000 asked for, but mnist has 60000"),
        ("data.groups.1.test_size=10001", "data.groups[1].test_size: 10001 asked for, but fashion-mnist has 10000"),
        ("name=../../x", "name: '../../x' is not a run name"),
        ("name=/tmp/x", "name: '/tmp/x' is not a run name"),
        ("data.groups.0.name=../g", "data.groups[0].name: '../g' is not a group name"),
    ],
)
def test_bad_config_values(setup, capsys, setting, message):
    cfg, runs = setup
    assert message in fails_cleanly(train_argv(cfg, runs, "--set", setting), capsys, runs, cfg.parent)


def test_more_clients_than_images(setup, capsys):
    cfg, runs = setup
    argv = train_argv(cfg, runs, "--set", "data.groups.1.train_size=null", "--set", "data.groups.1.clients=60001")
    err = fails_cleanly(argv, capsys, runs, cfg.parent)
    assert "data.groups[1].clients: 60001 clients but only 60000 training images" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-rounds", "-1"], "--max-rounds: must be >= 1"),
        (["--max-rounds", "0"], "--max-rounds: must be >= 1"),
        (["--name", "../escape"], "--name: '../escape' is not a run name"),
        (["--name", "/abs/run"], "--name: '/abs/run' is not a run name"),
        (["--set", "mode=centralized", "--set", "train.rounds=3"], "--set train.rounds: a centralised run"),
    ],
)
def test_bad_options(setup, capsys, extra, message):
    cfg, runs = setup
    err = fails_cleanly(train_argv(cfg, runs, *extra), capsys, runs, cfg.parent, cfg.parent.parent / "abs")
    assert message in err


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data_dir):
    """Two finished tiny runs (2 rounds): ours, and one with a different encoder."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for name, model in (("run", {}), ("other", {"encoder_hidden": [32]})):
        cfg = write_config(root / f"{name}.yaml", shared_data_dir, model=model, train={"rounds": 2})
        assert cli.main(train_argv(cfg, root / "runs", "--name", name)) == 0
        out[name] = root / "runs" / name
    return out


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    return copy


def test_resume_refuses_a_hand_edited_config(run, capsys):
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["train"]["lr"], raw["seed"] = 0.01, 7
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    err = fails_cleanly(["train", "--resume", str(run), "--set", "train.rounds=3"], capsys, run)
    assert f"{run / 'config.yaml'} no longer matches the config stored in {run / 'checkpoints' / 'latest.pt'}" in err
    assert "seed is 7 in config.yaml but 3 in the checkpoint" in err
    assert "train.lr is 0.01 in config.yaml but 0.001 in the checkpoint" in err


def test_resume_refuses_another_runs_checkpoint(run, trained, capsys):
    shutil.copy(trained["other"] / "checkpoints" / "latest.pt", run / "checkpoints" / "latest.pt")
    assert len((run / "metrics.jsonl").read_text().splitlines()) > 2
    err = fails_cleanly(["train", "--resume", str(run), "--set", "train.rounds=3"], capsys, run)
    assert "model.encoder_hidden is [64] in config.yaml but [32] in the checkpoint" in err


def test_resume_refuses_a_changed_architecture(run, trained, capsys):
    ours, theirs = (
        load_state(run / "checkpoints" / "latest.pt"),
        load_state(trained["other"] / "checkpoints" / "latest.pt"),
    )
    theirs.config = ours.config  # the stored config agrees, the weights do not
    save_state(theirs, run / "checkpoints" / "latest.pt")
    err = fails_cleanly(["train", "--resume", str(run), "--set", "train.rounds=3"], capsys, run)
    assert "the checkpoint's weights do not fit the model of 'tiny'" in err
    assert "tensor(s) of another shape, e.g. encoder." in err


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"weights": {}}, "checkpoint format None is not the supported format 1"),
        ({"format_version": 1, "round": 2, "config": {}}, "not a fissionvae server state (weights is not a mapping"),
        ({"format_version": 1, "round": -1, "weights": {}, "config": {}}, "not a fissionvae server state (round -1 is"),
    ],
)
def test_resume_refuses_a_foreign_checkpoint(run, capsys, payload, message):
    torch.save(payload, run / "checkpoints" / "latest.pt")
    err = fails_cleanly(["train", "--resume", str(run)], capsys, run)
    assert f"{run / 'checkpoints' / 'latest.pt'}: {message}" in err


def test_resume_refuses_fewer_rounds_than_done(run, capsys):
    err = fails_cleanly(["train", "--resume", str(run), "--set", "train.rounds=1"], capsys, run)
    assert "--set train.rounds=1: the run has already done 2 rounds" in err


def test_resume_refuses_train_rounds_on_a_centralised_run(tmp_path, shared_data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", shared_data_dir, mode="centralized", train={"centralized_epochs": 1})
    assert cli.main(train_argv(cfg, tmp_path / "runs", "--name", "c")) == 0
    run = tmp_path / "runs" / "c"
    err = fails_cleanly(["train", "--resume", str(run), "--set", "train.rounds=5"], capsys, run)
    assert "set train.centralized_epochs instead" in err


def test_resume_refuses_a_bad_max_rounds(run, capsys):
    assert "--max-rounds: must be >= 1" in fails_cleanly(
        ["train", "--resume", str(run), "--max-rounds", "-1"], capsys, run
    )


# --------------------------------------------------------------------------- order and leftovers


def test_finished_only_after_images_and_plots(setup, monkeypatch):
    cfg, runs = setup
    seen = []
    real = engine.write_run_artifacts

    def spy(model, groups, run, run_cfg):
        seen.append(json.loads(run.status_path.read_text())["state"])
        real(model, groups, run, run_cfg)

    monkeypatch.setattr(engine, "write_run_artifacts", spy)
    assert cli.main(train_argv(cfg, runs, "--name", "r", "--set", "train.rounds=1")) == 0
    status = json.loads((runs / "r" / "status.json").read_text())
    assert seen == ["running"] and status["state"] == "finished"
    assert (runs / "r" / "plots" / "loss.png").is_file() and (runs / "r" / "images" / "samples_mnist.png").is_file()


def test_resume_removes_temp_files_of_a_killed_process(setup, capsys):
    cfg, runs = setup
    assert cli.main(train_argv(cfg, runs, "--name", "r", "--max-rounds", "1")) == 0
    run = runs / "r"
    stale = [run / "checkpoints" / ".latest.pt.k2j4_x9a.tmp", run / ".status.json.abcdefgh.tmp"]
    kept = [run / "notes.tmp", run / ".latest.pt.short.tmp"]  # not atomic_write's pattern: left alone
    for path in stale + kept:
        path.write_bytes(b"half")
    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert load_state(run / "checkpoints" / "latest.pt").round == 4


# --------------------------------------------------------------------------- other errors


def test_runtime_errors_are_one_line_and_debug_shows_the_traceback(setup, capsys, monkeypatch):
    cfg, runs = setup

    def broken(*args, **kwargs):
        raise RuntimeError("first line\n  second line")

    monkeypatch.setattr(api, "train_from_config", broken)
    err = fails_cleanly(train_argv(cfg, runs), capsys, runs, status=1)
    assert "RuntimeError: first line second line" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="first line"):
        cli.main(["--debug", *train_argv(cfg, runs)])


def test_a_folder_given_as_config_file_or_run_folder(setup, capsys):
    cfg, runs = setup
    folder = cfg.parent
    err = fails_cleanly(["train", "--config", str(folder), "--runs-dir", str(runs)], capsys, folder)
    assert f"{folder}: is a folder, not a config file" in err
    assert f"{cfg}: not a run folder (no such folder)" in fails_cleanly(["train", "--resume", str(cfg)], capsys, folder)
    err = fails_cleanly(train_argv(cfg, runs, "--set", "seed.x=1"), capsys, folder)
    assert "--set seed.x: seed is a value, not a section" in err
    err = fails_cleanly(train_argv(cfg, runs, "--data-dir", str(cfg)), capsys, folder)
    assert f"{cfg}: the data folder is a file, not a folder" in err


def test_resume_refuses_a_missing_or_folder_checkpoint(run, capsys):
    ckpt = run / "checkpoints" / "latest.pt"
    ckpt.unlink()
    err = fails_cleanly(["train", "--resume", str(run)], capsys, run)
    assert f"{ckpt}: missing, but status.json says 2 round(s) were done" in err
    ckpt.mkdir()
    assert f"{ckpt}: is not a checkpoint file" in fails_cleanly(["train", "--resume", str(run)], capsys, run)
