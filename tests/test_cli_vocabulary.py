"""The command line a researcher expects: one vocabulary, help everywhere, run folders accepted, no option ignored."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import pytest
import yaml
from tests.helpers import tiny_config

from fissionvae.cli import build_parser, main
from fissionvae.studies.cli import fission_scale
from fissionvae.studies.fission import Scale


def _parsers(parser: argparse.ArgumentParser, path: str = "fissionvae"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return action


def _command(*words: str) -> argparse.ArgumentParser:
    return dict(_parsers(build_parser()))[" ".join(("fissionvae", *words))]


def test_every_option_has_help():
    missing = [
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, parser in _parsers(build_parser())
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)) and not a.help
    ]
    assert not missing, missing


@pytest.mark.parametrize("flag", ["--runs-dir", "--data-dir", "--device", "--num-samples", "--no-progress"])
def test_shared_options_have_one_spelling_and_one_default(flag):
    found = [
        (path, _option(p, flag))
        for path, p in _parsers(build_parser())
        if any(flag in a.option_strings for a in p._actions)
    ]
    assert len(found) >= 2, f"{flag} is shared by several commands"
    # the one exception: `sample` draws a grid and needs a size (64) where the others default to their protocol's
    kinds = {(tuple(a.option_strings), a.default, a.dest, a.type) for path, a in found if path != "fissionvae sample"}
    assert len(kinds) == 1, found
    if flag == "--num-samples":  # -n and --num-samples go together everywhere
        assert all("-n" in a.option_strings for _, a in found)


def test_sample_keeps_its_grid_default():
    assert _command("sample").parse_args(["r", "--group", "a", "--out", "o.png"]).num_samples == 64
    assert _command("sample").parse_args(["r", "--group", "a", "--out", "o.png", "--num-samples", "9"]).num_samples == 9


def test_evaluate_takes_the_studies_fid_bootstrap_option():
    from fissionvae.cli_options import fid_bootstrap_of

    evaluate, fission = _command("evaluate"), _command("study", "fission")
    assert evaluate.parse_args(["r"]).fid_bootstrap == 0  # off by default: `evaluate` is unchanged
    assert fid_bootstrap_of(evaluate.parse_args(["r", "--fid-bootstrap", "200"])) == 200
    assert fission.parse_args([]).fid_bootstrap == 50
    with pytest.raises(ValueError, match="at least 2 resamples"):
        fid_bootstrap_of(evaluate.parse_args(["r", "--fid-bootstrap", "1"]))


def test_both_studies_speak_preset(capsys):
    fission = _command("study", "fission")
    assert fission_scale(fission.parse_args([])) == Scale(1.0)
    assert fission_scale(fission.parse_args(["--preset", "full"])) == Scale(1.0)
    assert fission_scale(fission.parse_args(["--preset", "0.25"])) == Scale(0.25)
    assert fission_scale(fission.parse_args(["--preset", "tiny"])) == Scale(tiny=True)
    assert capsys.readouterr().err == ""
    assert fission_scale(fission.parse_args(["--tiny"])) == Scale(tiny=True)  # deprecated spellings still work
    assert fission_scale(fission.parse_args(["--scale", "0.5"])) == Scale(0.5)
    err = capsys.readouterr().err
    assert "--tiny is deprecated; use --preset tiny" in err and "--scale is deprecated" in err
    with pytest.raises(ValueError, match="expected a number in \\(0, 1\\] or 'tiny'"):
        fission_scale(fission.parse_args(["--preset", "huge"]))
    assert _command("study", "dugdale").parse_args(["--preset", "quick"]).preset == "quick"
    assert _command("study", "dugdale").parse_args(["--quick"]).quick
    assert "--quick" not in _command("study", "dugdale").format_help()  # hidden, not advertised


# --------------------------------------------------------------------------- end to end on tiny runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data_dir):
    """A flat (+L+D) and a hierarchical (+H+L+D) one-round run, trained with --data-dir and no data.dir."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name, hierarchical in (("flat", False), ("hier", True)):
        raw = tiny_config(shared_data_dir, model={"hierarchical": hierarchical}).to_dict()
        raw["data"]["dir"] = None
        config = root / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw))
        argv = ["train", "--config", str(config), "--set", "train.rounds=1", "--runs-dir", str(root / "runs")]
        assert main([*argv, "--name", name, "--data-dir", str(shared_data_dir), "--no-progress"]) == 0
        out[name] = root / "runs" / name
    return out


def test_no_progress_silences_training(tmp_path, shared_data_dir, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shared_data_dir).to_dict()))
    argv = ["train", "--config", str(config), "--set", "train.rounds=1", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def _downloaded(data_dir) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in data_dir.glob("*/*.gz"))


def test_no_progress_silences_the_download_bar_of_train_and_evaluate(tmp_path, shared_data_dir, capsys, monkeypatch):
    """A missing dataset is downloaded (from a file:// mirror of the shared data) without a bar under --no-progress."""
    from fissionvae.config import load_config
    from fissionvae.data.federated import load_groups
    from fissionvae.data.mirrors import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, shared_data_dir.resolve().as_uri())
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path / "cache"))  # the evaluation's classifier
    raw = tiny_config(shared_data_dir, data={"download": True}).to_dict()
    raw["data"]["dir"] = None
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    expected = sorted(f"{d}/{f}" for d in ("fashion-mnist", "mnist") for f in os.listdir(shared_data_dir / "mnist"))
    capsys.readouterr()
    # the control: with progress on, the same download draws a bar naming each file
    load_groups(load_config(raw=raw), tmp_path / "shown", progress=True)
    assert _downloaded(tmp_path / "shown") == expected
    err = capsys.readouterr().err
    assert "mnist/t10k-images-idx3-ubyte.gz" in err and "100%" in err
    train = ["train", "--config", str(config), "--set", "train.rounds=1", "--runs-dir", str(tmp_path / "runs")]
    assert main([*train, "--name", "r", "--data-dir", str(tmp_path / "train-data"), "--no-progress"]) == 0
    assert _downloaded(tmp_path / "train-data") == expected  # the files were downloaded ...
    assert capsys.readouterr().err == ""  # ... silently
    evaluate = ["evaluate", str(tmp_path / "runs" / "r"), "--no-fid", "--no-tsne", "-n", "20", "--iw-samples", "2"]
    assert main([*evaluate, "--data-dir", str(tmp_path / "eval-data"), "--no-progress"]) == 0
    assert _downloaded(tmp_path / "eval-data") == expected
    assert capsys.readouterr().err == ""


def test_a_run_remembers_its_data_folder(runs, shared_data_dir, tmp_path, monkeypatch):
    saved = yaml.safe_load((runs["flat"] / "config.yaml").read_text())
    assert saved["data"]["dir"] == str(shared_data_dir.resolve())
    from fissionvae.data.federated import load_groups
    from fissionvae.runs import RunDir

    monkeypatch.setenv("FISSIONVAE_DATA_DIR", str(tmp_path / "empty"))  # the fallback would be empty: no download
    groups = load_groups(RunDir.open(runs["flat"]).load_config())
    assert [g.name for g in groups] == ["mnist", "fashion"] and len(groups[0].test_images) == 200


def test_config_accepts_a_run_folder(runs, capsys):
    assert main(["config", str(runs["hier"]), "--set", "train.rounds=9"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hierarchical"] is True and printed["train"]["rounds"] == 9


def test_sample_names_the_group_and_writes_the_format_asked(runs, tmp_path, capsys):
    jpg = tmp_path / "a.jpg"
    assert main(["sample", str(runs["flat"]), "--group", "1", "-n", "4", "--out", str(jpg)]) == 0
    assert "of group 1 (fashion)" in capsys.readouterr().out
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, not PNG bytes
    png = tmp_path / "a.png"
    assert main(["sample", str(runs["flat"]), "--group", "fashion", "-n", "4", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sample", str(runs["flat"]), "--group", "1", "--out", str(tmp_path / "a.gif")]) == 2
    assert "unsupported image type '.gif'" in capsys.readouterr().err and not (tmp_path / "a.gif").exists()


def test_sample_is_seeded_from_the_sample_stream(runs, tmp_path):
    """Default seed = the run's: the same images as the run folder's samples_<group>.png grid."""
    from fissionvae.api import load_run
    from fissionvae.artifacts import generation_grid
    from fissionvae.seeding import torch_generator

    model, cfg = load_run(runs["flat"])
    expected = model.sample(1, 4, torch_generator(cfg.seed, "sample", 1))
    assert generation_grid(model, 1, 4, cfg.seed).equal(expected)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    main(["sample", str(runs["flat"]), "--group", "1", "-n", "4", "--out", str(a)])
    main(["sample", str(runs["flat"]), "--group", "1", "-n", "4", "--out", str(b), "--seed", str(cfg.seed)])
    assert a.read_bytes() == b.read_bytes()


def test_sample_refuses_a_prior_group_it_would_ignore(runs, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    assert main(["sample", str(runs["hier"]), "--group", "0", "--prior-group", "1", "--out", out]) == 2  # z2
    assert "--prior-group needs fixed group priors and a pathway" in capsys.readouterr().err
    argv = ["sample", str(runs["hier"]), "--group", "0", "--prior-group", "1", "--pathway", "z1-z2-z1", "--out", out]
    assert main(argv) == 0
    assert main(["sample", str(runs["flat"]), "--group", "0", "--prior-group", "fashion", "--out", out]) == 0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_is_one_self_contained_file_that_a_browser_renders(runs, tmp_path):
    """The HTML report embeds its images; Debian's headless chromium renders it (docs/evaluation.md)."""
    for run in runs.values():
        argv = ["evaluate", str(run), "--no-fid", "--no-tsne", "-n", "20", "--iw-samples", "2", "--no-progress"]
        assert main(argv) == 0
    out = tmp_path / "report"
    assert main(["report", str(runs["flat"]), str(runs["hier"]), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 1 + 2 * 2  # loss curves + 2 groups x 2 runs
    assert "src='images/" not in html and "loss_curves.png'" not in html
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium is missing: apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    # mailed alone, away from the report folder; and a twin whose embedded images are broken
    shots = {}
    for name, text in (("mailed", html), ("broken", html.replace("data:image/png;base64,", "data:image/png;base64,x"))):
        page, shot = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        page.write_text(text)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
             "--window-size=1200,2000", page.as_uri()],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        shots[name] = shot
    from PIL import Image, ImageChops

    with Image.open(shots["mailed"]) as good, Image.open(shots["broken"]) as broken:
        assert good.size == (1200, 2000)
        assert ImageChops.difference(good.convert("RGB"), broken.convert("RGB")).getbbox() is not None  # images drawn
