"""Studies check what their evaluations need before they train: a missing FID network fails at once."""

from pathlib import Path

import pytest

from fissionvae.evaluation.inception import ENV_INCEPTION
from fissionvae.studies.dugdale import run_dugdale_study
from fissionvae.studies.fission import run_fission_study
from fissionvae.studies.fission_options import Scale, StudyOptions


@pytest.fixture
def no_inception(tmp_path, monkeypatch) -> Path:
    missing = tmp_path / "nowhere" / "fid_inception_v3.pt"
    monkeypatch.setenv(ENV_INCEPTION, str(missing))
    return missing


def test_fission_study_without_the_fid_network_stops_before_training(tmp_path, shared_data_dir, no_inception):
    opts = StudyOptions(
        tables=("3",),
        scale=Scale(tiny=True),
        runs_dir=tmp_path / "runs",
        out=tmp_path / "page",
        data_dir=shared_data_dir,
        progress=False,
    )
    with pytest.raises(FileNotFoundError, match=f"FID Inception-v3 not found at {no_inception}"):
        run_fission_study(opts)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dugdale_study_without_the_fid_network_stops_before_training(tmp_path, shared_data_dir, no_inception):
    with pytest.raises(FileNotFoundError, match="fissionvae fetch-inception"):
        run_dugdale_study(tmp_path / "out", tmp_path / "runs", shared_data_dir, quick=True, progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
