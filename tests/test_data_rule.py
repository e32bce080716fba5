"""The conftest rule: tests that need the real data fail the run under CI and are listed loudly elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def _pytest(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"FISSIONVAE_TEST_DATA_DIR": str(tmp_path / "none")}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_golden.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_data_is_an_error_under_ci(tmp_path):
    out = _pytest(tmp_path, ci=True)
    assert out.returncode != 0
    assert "CI is set and 1 collected tests need the data" in out.stderr + out.stdout


def test_missing_data_is_listed_loudly_locally(tmp_path):
    out = _pytest(tmp_path, ci=False)
    assert out.returncode == 0
    assert "SKIPPED FOR MISSING DATA" in out.stdout and "test_loss_after_round_one_is_pinned" in out.stdout
