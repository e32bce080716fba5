"""Atomic writes (fissionvae.io): all or nothing, and the permissions of a plain open()."""

import os
import stat

import numpy as np
import pytest

from fissionvae.evaluation.fid import _save_npz_atomic
from fissionvae.io import atomic_write, atomic_write_json, read_jsonl


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_umask_permissions_not_the_temp_files(tmp_path, umask):
    old = os.umask(umask)
    try:
        json_file = atomic_write_json(tmp_path / "a" / "status.json", {"round": 3})
        npz_file = tmp_path / "stats.npz"
        _save_npz_atomic(npz_file, mu=np.zeros(3))  # the FID cache goes through the same function
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(json_file.stat().st_mode) == want and stat.S_IMODE(npz_file.stat().st_mode) == want
    assert np.load(npz_file)["mu"].shape == (3,)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = atomic_write_json(tmp_path / "eval.json", {"fid": 1.0})

    def broken(fh):
        fh.write(b'{"fid": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(target, broken)
    assert target.read_text() == '{\n  "fid": 1.0\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1}\n{"round": 2}\n{"rou')
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]
