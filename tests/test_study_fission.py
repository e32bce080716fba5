"""The FissionVAE study: planning, scale presets, the prior-swap evaluation, resumption and the page."""

import argparse
import json

import numpy as np
import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.config import load_config
from fissionvae.evaluation.evaluate import (
    EvalOptions,
    evaluate_run,
    generate,
    weights_digest,
)
from fissionvae.evaluation.runtimes import resolve_runtime
from fissionvae.federation.engine import train
from fissionvae.runs import RunDir
from fissionvae.studies import common
from fissionvae.studies.cli import register
from fissionvae.studies.fission import Study, run_fission_study
from fissionvae.studies.fission_claims import Noise, check_claims
from fissionvae.studies.fission_estimate import FID_IMAGES_PER_CPU_SECOND, describe_plan
from fissionvae.studies.fission_ledger import Ledger, LedgerError, numbers
from fissionvae.studies.fission_options import CONFIGS_DIR, Scale, StudyOptions, resolve_config
from fissionvae.studies.fission_page import _cell
from fissionvae.studies.fission_plan import TABLES, EvalSpec, RunSpec, make_plan, parse_tables
from fissionvae.studies.fission_tables import baseline_entries, baseline_rows, paper_doubts
from fissionvae.studies.page_render import md_table

PAPER_TABLES = ("3", "5", "6", "7", "10")


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """The domain classifiers these tiny data sets train are cached in a temp dir, not the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FISSIONVAE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


# --------------------------------------------------------------------------- planning (no training)


def test_each_table_needs_its_runs_and_tables_share_them():
    t3 = make_plan(["3"])
    assert [r.key for r in t3.runs] == [
        f"{c}/{m}"
        for c in ("fedvae", "fission_l", "fission_d", "fission_ld", "fission_hld_learnable")
        for m in ("federated", "centralized")
    ]
    t5 = make_plan(["5"])
    assert len(t5.runs) == 11 and {r.mode for r in t5.runs} == {"federated"}
    assert len(make_plan(["3", "5"]).runs) == 18  # +D, +L+D (wave) and +H+L+D (learnable) fed runs are shared
    t6 = make_plan(["6"])
    assert [r.config for r in t6.runs] == [
        "fission_hld_learnable",
        "fission_hld_fashion_deep",
        "fission_hld_fashion_deepconv",
    ]
    t7 = make_plan(["7", "10"])
    assert t7.runs == [RunSpec("fission_hld")]  # evaluation only: one run, four evaluations
    assert [e.result_name for e in t7.evals] == ["eval-z1-z2-z1", "eval-z1", "eval", "eval-z1-z2-z1-swap"]
    assert len(make_plan(PAPER_TABLES).runs) == 20 and len(make_plan(PAPER_TABLES).evals) == 23
    full = make_plan(TABLES)  # + the noise table: FedVAE and +L+D again with a second seed
    assert len(full.runs) == 22 and len(full.evals) == 25
    assert [r.key for r in make_plan(["noise"]).runs] == [
        "fedvae/federated",
        "fedvae/federated/seed1",
        "fission_ld/federated",
        "fission_ld/federated/seed1",
    ]
    assert full.tables_of(RunSpec("fission_hld")) == ["5", "7", "10"] and full.tables_of(
        RunSpec("fission_hld_learnable")
    ) == ["3", "5", "6"]
    assert (
        EvalSpec(RunSpec("fission_hld"), None) in make_plan(["5"]).evals
    )  # Table 7's default row is Table 5's evaluation


def test_resolved_configs_match_the_rows_they_stand_for():
    scale = Scale()
    for t in make_plan(TABLES).tables:
        for row in t.rows:
            for column, ev in row.evals.items():
                cfg = resolve_config(ev.run, scale)
                mode = "federated" if column == "second seed" else column
                assert cfg.seed == (1 if column == "second seed" else 0)
                assert cfg.mode == mode and (
                    cfg.train.rounds,
                    cfg.train.local_epochs,
                    cfg.train.centralized_epochs,
                ) == (70, 5, 70)
                if t.key == "5":
                    family, prior = row.label.split()
                    assert (
                        cfg.model.prior == prior
                        and cfg.model.hierarchical == (family == "+H+L+D")
                        and cfg.model.decoder_branches
                    )
    fashion = {spec.config: resolve_config(spec, scale).data.groups[1].decoder for spec in make_plan(["6"]).runs}
    assert fashion["fission_hld_learnable"] is None
    assert (
        fashion["fission_hld_fashion_deep"].kind,
        len(fashion["fission_hld_fashion_deep"].hidden),
        len(fashion["fission_hld_fashion_deep"].latent_hidden),
    ) == ("mlp", 4, 4)
    assert fashion["fission_hld_fashion_deepconv"].kind == "conv"
    # content identity: Table 5's "+L+D identical" cell is Table 3's FissionVAE+D run
    t5 = {r.label: r.evals["federated"].run for r in make_plan(["5"]).tables[0].rows}
    t3 = {r.label: r.evals["federated"].run for r in make_plan(["3"]).tables[0].rows}
    assert common.config_digest(resolve_config(t5["+L+D identical"], scale)) == common.config_digest(
        resolve_config(t3["FissionVAE+D"], scale)
    )


def test_config_keys_added_later_keep_the_identity_of_results_recorded_before_them():
    # the committed s=0.05 ledger cell of FedVAE was recorded before federation.aggregator & co.
    # existed; at their defaults the digest is still that cell's (so the page's fallback finds it)
    fedvae = resolve_config(make_plan(["3"]).runs[0], Scale.parse("0.05"))
    assert common.config_digest(fedvae).startswith("c6b7795566ac")
    # a non-default value of a later key is a different computation
    for override in ("federation.aggregator=median", "federation.clip_norm=1.0", "model.decoder.output_norm=false"):
        changed = load_config(CONFIGS_DIR / "fedvae.yaml", [override])
        assert common.config_digest(changed) != common.config_digest(load_config(CONFIGS_DIR / "fedvae.yaml"))
    # the Gaussian std settings count only under the Gaussian likelihood
    base = ["model.likelihood=gaussian"]
    gauss = common.config_digest(load_config(CONFIGS_DIR / "fedvae.yaml", base))
    assert gauss != common.config_digest(load_config(CONFIGS_DIR / "fedvae.yaml", [*base, "model.gaussian_std_lr=0.1"]))
    plain = common.config_digest(load_config(CONFIGS_DIR / "fedvae.yaml"))
    assert plain == common.config_digest(load_config(CONFIGS_DIR / "fedvae.yaml", ["model.gaussian_std_lr=0.1"]))


def test_scale_presets_are_labelled_and_sized():
    assert (
        Scale().overrides(load_config(CONFIGS_DIR / "fission_ld.yaml")) == []
        and Scale().num_samples() is None
        and Scale().iw_samples() == 100
    )
    cfg = resolve_config(RunSpec("fission_ld", "centralized"), Scale(0.25))
    assert cfg.name == "fission_ld-centralized-reduced-s0.25" and (
        cfg.train.rounds,
        cfg.train.centralized_epochs,
        cfg.train.local_epochs,
    ) == (18, 18, 5)
    assert (
        cfg.data.groups[0].train_size is None and Scale(0.25).num_samples() == 5000 and Scale(0.25).iw_samples() == 25
    )
    tiny = resolve_config(RunSpec("fission_hld_fashion_deep"), Scale(tiny=True))
    assert (
        tiny.name == "fission_hld_fashion_deep-tiny"
        and [(g.clients, g.train_size, g.test_size) for g in tiny.data.groups] == [(2, 200, 40)] * 2
    )
    assert tiny.data.groups[1].decoder.hidden == [256, 512, 512, 512]  # the tiny preset keeps the architecture
    assert (
        StudyOptions(tables=("3", "7"), scale=Scale(0.25)).command()
        == "fissionvae study fission --dataset mixed_mnist --tables 3,7 --preset 0.25"
    )
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="must be in"):
            Scale(bad)
    with pytest.raises(ValueError, match="exclude"):
        Scale(0.5, tiny=True)
    assert parse_tables("3, fig10,7") == ("3", "7", "10") and parse_tables(None) == TABLES
    with pytest.raises(ValueError, match="unknown table"):
        parse_tables("4")


def test_cli_plan_reports_sample_passes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["study", "fission", "--dataset", "mixed_mnist", "--plan", "--runs-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    # 15 x 21M + 5 x 8.4M, and the two noise runs: 2 x 21M
    # no finished run in the ledger yet: 5,000 samples/s for both modes
    assert "22 runs; training left: 399,000,000 sample passes = 22.2 h at federated 5,000, centralised 5,000 " in out
    assert "25 evaluations left x 20,000 generated images" in out
    # the FID hours follow the runtime `--fid-runtime auto` resolves to here: 500,000 images at its rate
    runtime = resolve_runtime("auto", "cpu")
    rate = FID_IMAGES_PER_CPU_SECOND[runtime]
    assert f"{500_000 / rate / 3600:.1f} h of one CPU core at {rate:g} images/s with {runtime}" in out
    args = parser.parse_args(
        ["study", "fission", "--tables", "7", "--scale", "0.25", "--plan", "--runs-dir", str(tmp_path)]
    )
    assert args.func(args) == 0 and "fission_hld-reduced-s0.25" in capsys.readouterr().out


# --------------------------------------------------------------------------- the page's pieces (synthetic numbers)


def _result(fid: float, purity: float) -> dict:
    groups = {"mnist": purity, "fashion": purity}
    return {
        "num_samples": 20000,
        "reduced": False,
        "samples_per_group": {g: 10000 for g in groups},
        "seconds": 1.0,
        "pathway": "z2",
        "fid": {"overall": fid, "real": 20000, "per_group": {g: {"fid": fid + 1} for g in groups}},
        "classifier": {
            "is_domain": {"mean": 5.0},
            "per_group": {g: {"purity": p, "is_domain": 3.0} for g, p in groups.items()},
        },
        "nll": {
            "overall": {"images": 2000, "neg_elbo": {"nats_per_dim": 0.3}, "iw": {"nats_per_dim": 0.29, "k": 100}},
            "per_group": {g: {"neg_elbo": {"nats_per_dim": 0.3}} for g in groups},
        },
    }


def _entry(fid: float, purity: float, interval: float | None = 1.0) -> dict:
    return {
        "numbers": numbers(_result(fid, purity)),
        "fid_interval": None if interval is None else [fid - interval, fid + interval],
        "same_noise_as_unswapped": True,
    }


def _claims(plan, entries: dict, scales: dict | None = None) -> dict[str, dict]:
    noise = Noise(plan, lambda ev: entries.get(ev), lambda ev: (scales or {}).get(ev, "full"))
    return {r["claim"].split(":")[0]: r for r in check_claims(plan, lambda c: _cell(plan, c), noise)}


def test_claims_are_same_or_differs_only_beyond_the_measured_noise():
    plan = make_plan(["7", "10", "noise"])
    fids = {"eval": 50.0, "eval-z1-z2-z1": 90.0, "eval-z1": 120.0, "eval-z1-z2-z1-swap": 80.0}
    entries = {ev: _entry(fids[ev.result_name], 0.9) for ev in plan.evals if ev.run.config == "fission_hld"}
    rows = _claims(plan, entries)  # no second seed yet: the seed noise is unmeasured, nothing is decided
    assert rows["Table 7"]["verdict"] == rows["Figure 10"]["verdict"] == "inconclusive"
    assert rows["Table 7"]["noise"] == "not measured"
    noise_runs = [ev for ev in plan.evals if ev.run.config in ("fedvae", "fission_ld")]
    for ev, fid in zip(noise_runs, (100.0, 103.0, 60.0, 61.0), strict=True):
        entries[ev] = _entry(fid, 0.9)
    rows = _claims(plan, entries)  # seed noise +-3 per cell, bootstrap +-1: gaps of 40 and 30 are decided
    assert rows["Table 7"]["verdict"] == "same" and rows["Table 7"]["ours"] == "50.00 vs 90.00; 90.00 vs 120.00"
    assert rows["Table 7"]["paper"] == "53.68 vs 93.79; 93.79 vs 124.76"
    assert rows["Table 7"]["size"] == "paper 25 to 43%, ours 25 to 44%" and rows["Table 7"]["noise"] == "±4.24"
    assert rows["Figure 10"]["verdict"] == "differs"  # the swap lowered FID by 10 > 4.24: the check says so
    swap = next(ev for ev in plan.evals if ev.prior_swap)
    entries[swap] = _entry(92.0, 0.9)  # 2 above the unswapped one: within the noise
    assert _claims(plan, entries)["Figure 10"]["verdict"] == "inconclusive"
    entries[swap]["same_noise_as_unswapped"] = False  # an evaluation drawn with other noise is never decided on
    entries[swap]["numbers"]["fid"] = 200.0
    assert _claims(plan, entries)["Figure 10"]["verdict"] == "inconclusive"
    del entries[swap]
    assert _claims(plan, entries)["Figure 10"]["verdict"] == "pending"
    # a reduced-scale stand-in is never compared with a paper-scale cell, in a claim or as a seed pair
    z1 = next(ev for ev in plan.evals if ev.result_name == "eval-z1")
    mixed = _claims(plan, entries, {z1: "reduced-s0.05"})["Table 7"]
    assert mixed["verdict"] == "pending" and mixed["ours"] == "50.00 vs 90.00 (1 pair across scales not compared)"
    assert mixed["size"] == "paper 25 to 43%, ours 44%"
    seed2 = [ev for ev in noise_runs if ev.run.seed is not None]
    table7 = _claims(plan, entries, dict.fromkeys(seed2, "reduced-s0.05"))["Table 7"]
    assert table7["noise"] == "not measured" and table7["verdict"] == "inconclusive"
    assert md_table(["a"], [["p(x|z1)"]]).splitlines()[-1] == "| p(x\\|z1) |"


def test_table6_doubts_are_computed_from_the_papers_own_numbers():
    paper = {"mnist": (46.73, 2.41, 0.38), "fashion": (61.81, 2.92, 0.61), "overall": (47.72, 2.98, 0.30)}
    floor = {"nll": {"fashion": {"nats_per_dim": 0.491}, "mnist": {"nats_per_dim": 0.25}}}
    text = paper_doubts(paper, floor)
    assert "overall NLL 0.30 below both groups' (0.38, 0.61)" in text and "above the mean-image floor's 0.491" in text
    fine = {"mnist": (1, 1, 0.2), "fashion": (1, 1, 0.4), "overall": (1, 1, 0.3)}
    assert paper_doubts(fine, floor) == "-"


def test_baseline_rows_put_fedgan_beside_the_papers_row(tmp_path):
    for mode, fid in (("federated", 120.0), ("centralized", 95.0)):
        folder = tmp_path / mode
        folder.mkdir()
        (folder / "eval.json").write_text(json.dumps(_result(fid, 0.5) | {"name": "fedgan", "mode": mode}))
    entries = baseline_entries((tmp_path / "federated", tmp_path / "centralized"))
    (row,) = baseline_rows(json.loads(json.dumps(entries)))  # what the ledger holds once the folders are gone
    assert row[0] == "fedgan (baseline)" and row[1] == "120.00 (118.52)" and row[4] == "95.00 (91.08)"
    with pytest.raises(FileNotFoundError, match="no eval.json"):
        baseline_entries((tmp_path,))


def test_a_foreign_ledger_is_refused_with_its_path(tmp_path):
    path = tmp_path / "study.json"
    assert Ledger.load(path).cells == {}  # none yet: an empty ledger
    for text, match in (("{", "not a readable"), ('{"cells": {}}', "format None"), ("[1]", "format 'list'")):
        path.write_text(text)
        with pytest.raises(LedgerError, match=str(path)):
            Ledger.load(path)
        with pytest.raises(LedgerError, match=match):
            Ledger.load(path)
    path.write_text(json.dumps({"format": 2, "cells": {"x": {"numbers": {}}}, "runs": {}}))
    with pytest.raises(LedgerError, match="cell 'x' lacks"):
        Ledger.load(path)


def test_a_save_between_page_writes_keeps_the_pages_claims(tmp_path):
    path = tmp_path / "study.json"
    ledger = Ledger.load(path)
    ledger.save({"command": "fissionvae study fission", "claims": [{"claim": "c", "verdict": "inconclusive"}]})
    again = Ledger.load(path)
    again.runs["fedvae"] = {"config_sha256": "x"}  # a run finished training: saved before the next page write
    again.save()
    data = json.loads(path.read_text())
    assert (
        data["claims"] == [{"claim": "c", "verdict": "inconclusive"}] and data["command"] == "fissionvae study fission"
    )
    assert data["runs"] == {"fedvae": {"config_sha256": "x"}} and data["format"] == 2
    again.save({"command": "new"})  # the next page write replaces the metadata whole
    assert "claims" not in json.loads(path.read_text())


# --------------------------------------------------------------------------- prior swap in evaluate_run


def test_prior_swap_evaluation_draws_z1_from_the_other_groups_prior(tmp_path, shared_data_dir):
    cfg = tiny_config(
        shared_data_dir,
        model={"hierarchical": True},
        train={"rounds": 1},
        data={
            "groups": [
                {"name": "mnist", "dataset": "mnist", "clients": 1, "train_size": 100, "test_size": 20},
                {"name": "fashion", "dataset": "fashion-mnist", "clients": 1, "train_size": 100, "test_size": 20},
            ]
        },
    )
    run = RunDir.create(tmp_path, cfg, "hld")
    train(cfg, run, progress=False)
    base = {"num_samples": 20, "iw_samples": 1, "fid": False, "tsne": False, "progress": False, "pathway": "z1-z2-z1"}
    plain = evaluate_run(run.path, EvalOptions(**base, result_name="eval-z1-z2-z1"))
    swap = evaluate_run(run.path, EvalOptions(**base, prior_swap=True, result_name="eval-z1-z2-z1-swap"))
    assert not (run.path / "eval.json").exists()  # the default evaluation's file is left alone
    assert json.loads((run.path / "eval-z1-z2-z1-swap.json").read_text())["prior_of_group"] == {
        "mnist": "fashion",
        "fashion": "mnist",
    }
    assert (
        (run.path / "eval-z1-z2-z1-swap" / "samples_fashion_16x16.png").is_file()
        and not plain["prior_swap"]
        and swap["prior_swap"]
    )
    assert set(swap["classifier"]["per_group"]["mnist"]) >= {"purity", "is_domain", "samples"}
    model = api_model(run)
    own, swapped = (generate(model, 0, 4, cfg.seed, "z1-z2-z1", prior_group=p) for p in (None, 1))
    assert not torch.equal(own, swapped)
    # the swapped condition draws the unswapped condition's noise: only the prior differs
    from fissionvae.evaluation.evaluate import to_uint8
    from fissionvae.seeding import torch_generator

    same_noise = model.sample(0, 4, torch_generator(cfg.seed, "sample", 1000, 0), "z1-z2-z1", 1)
    assert torch.equal(swapped, to_uint8(same_noise)) and swap["same_noise_as_unswapped"]
    # the swap decodes with the group's own branch from the other group's prior mean: the same as asking for it directly
    g = torch.Generator().manual_seed(0)
    direct = model.sample(0, 3, g, "z1", prior_group=1)
    g = torch.Generator().manual_seed(0)
    by_hand = model.branches[0].likelihood.mean(
        model.branches[0].image_params(model.prior_means[1] + torch.randn(3, cfg.model.latent_dim, generator=g))
    )
    assert torch.allclose(direct, by_hand)
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(ValueError, match="prior_swap needs"):
        evaluate_run(run.path, EvalOptions(**(base | {"pathway": "z2"}), prior_swap=True, result_name="bad"))
    with pytest.raises(ValueError, match="result_name"):
        evaluate_run(run.path, EvalOptions(**base, result_name="../x"))
    assert sorted(p.name for p in run.path.iterdir()) == before


def api_model(run: RunDir):
    from fissionvae.api import load_run

    return load_run(run.path)[0]


# --------------------------------------------------------------------------- an interrupted tiny study, resumed


@pytest.fixture(scope="module")
def study(tmp_path_factory, shared_data_dir):
    """Tables 6, 7 and Figure 10 on the tiny preset (4 runs, 7 evaluations, no FID), interrupted, then completed."""
    root = tmp_path_factory.mktemp("study")
    opts = StudyOptions(
        tables=("6", "7", "10"),
        scale=Scale(tiny=True),
        runs_dir=root / "runs",
        out=root / "page",
        data_dir=shared_data_dir,
        fid=False,
        progress=False,
    )
    stages = {}
    # 1: one run, one round, then stop
    run_fission_study(StudyOptions(**{**opts.__dict__, "max_runs": 1, "max_rounds_per_run": 1}))
    stages["first"] = {p.parent.name: json.loads(p.read_text()) for p in (root / "runs").glob("*/status.json")}
    stages["first_page"] = (root / "page" / "mixed_mnist.md").read_text()
    # 2: everything
    run_fission_study(opts)
    stages["runs"] = {p.parent.name: p for p in (root / "runs").glob("*/status.json")}
    stages["mtimes"] = {
        str(p): p.stat().st_mtime_ns
        for p in (root / "runs").rglob("*")
        if p.name in ("latest.pt",) or p.suffix == ".json" and p.name.startswith("eval")
    }
    # 3: the same command again: nothing trained or evaluated
    run_fission_study(opts)
    return root, opts, stages


def test_interrupted_study_resumes_and_reuses_finished_work(study, shared_data_dir):
    root, _, stages = study
    (first,) = stages["first"].values()  # only one run was started, and it stopped after one of two rounds
    assert (first["state"], first["rounds_done"], first["rounds_planned"]) == ("stopped", 1, 2)
    assert "pending (round 1/2)" in stages["first_page"] and "pending (not started)" in stages["first_page"]
    statuses = {name: json.loads(p.read_text()) for name, p in stages["runs"].items()}
    assert len(statuses) == 4 and all(s["state"] == "finished" and s["rounds_done"] == 2 for s in statuses.values())
    (name,) = stages["first"]
    run = RunDir(root / "runs" / name)
    assert [m["round"] for m in run.metrics() if m.get("type") == "round"] == [
        1,
        2,
    ]  # resumed at round 2, nothing repeated
    # the resumed run ends with the weights of an uninterrupted run of the same config
    cfg = run.load_config()
    fresh = RunDir.create(root / "fresh", cfg, "fresh")
    train(cfg, fresh, data_dir=shared_data_dir, progress=False)
    assert weights_digest(fresh.load_state().weights) == weights_digest(run.load_state().weights)
    # the third call retrained and re-evaluated nothing
    after = {
        str(p): p.stat().st_mtime_ns
        for p in (root / "runs").rglob("*")
        if p.name in ("latest.pt",) or p.suffix == ".json" and p.name.startswith("eval")
    }
    assert after == stages["mtimes"] and len(after) == 4 + 7


def test_page_from_tiny_runs(study):
    root, opts, _ = study
    page = root / "page" / "mixed_mnist.md"
    md = page.read_text()
    assert md.startswith("# FissionVAE on Mixed MNIST: Tables 6, 7 and Figure 10 [REDUCED: tiny]")
    assert (
        "7 of 7 evaluation cells done at this scale, 4 runs" in md
        and "pending" not in md.split("## Table 6")[1].split("## Runs")[0]
    )
    expected = (
        "## Table 6",
        "## Table 7",
        "## Figure 10",
        "Mixed MNIST [REDUCED: tiny]",
        "(53.68)",
        "(124.76)",
        "(2.41)",
        "mnist 0.",
        "20 (reduced)",
        "-tiny-",
    )
    for text in (
        *expected,
        "| verdict |",
        "Verdict not written yet",
        "mean-image floor (no learning)",
        "paper doubtful?",
    ):
        assert text in md, text
    assert "p(x\\|z1)" in md  # table cells keep the paper's notation
    assets = root / "page" / "mixed_mnist"
    for name in ("generations_table6.png", "generations_table7.png", "generations_table10.png", "loss_table6.png"):
        assert 2_000 < (assets / name).stat().st_size < 400_000, name
        assert f"mixed_mnist/{name}" in md
    html = (root / "page" / "mixed_mnist.html").read_text()
    assert (
        html.count("<table>") == sum(line.startswith("|---|") for line in md.splitlines())
        and "generations_table10.png" in html
    )
    ledger = json.loads((assets / "study.json").read_text())
    swap = ledger["cells"]["tiny/fission_hld/federated/eval-z1-z2-z1-swap"]
    assert swap["numbers"]["prior_swap"] is True and swap["same_noise_as_unswapped"] and swap["cpu"]
    assert all((assets / "cells" / name).is_file() for name in swap["grids"].values())
    assert (
        ledger["runs"]["fission_hld-tiny"]["passes"] > 0
        and len(ledger["runs"]["fission_hld-tiny"]["loss"]["mnist"]) == 2
    )
    assert ledger["floor"]["nll"]["fashion"]["nats_per_dim"] > 0.3  # the floor row is in the ledger
    assert "Not at the paper's scale yet: `fissionvae study fission --dataset mixed_mnist --tables 6" in md
    # a verdict written beside the page is included the next time the page is written
    (assets / "verdict.md").write_text("We agree on the pathways.\n")
    run_fission_study(opts)
    assert "We agree on the pathways." in page.read_text() and "Verdict not written yet" not in page.read_text()


def test_missing_cells_fall_back_to_a_reduced_scale(study, tmp_path):
    root, opts, _ = study
    half = StudyOptions(
        **{**opts.__dict__, "scale": Scale(0.5), "out": tmp_path, "max_runs": 0, "fallback_scale": Scale(tiny=True)}
    )
    md = run_fission_study(half).read_text()  # trains nothing at scale 0.5: every cell comes from the tiny runs
    assert (
        "[REDUCED: reduced-s0.5]" in md
        and "0 of 7 evaluation cells done at this scale (7 more shown at `tiny`)" in md
        and "[tiny]" in md
        and "--fallback-scale tiny" in md
    )
    assert not list((root / "runs").glob("*-reduced-s0.5-*"))


def test_describe_plan_counts_finished_runs(study):
    _, opts, _ = study
    text = describe_plan(opts)
    assert text.count("in the ledger") == 4 and "training left: 0 sample passes" in text
    assert "0 evaluations left" in text
    # hours at what this machine measured: the median samples/s of the ledger's finished runs per mode
    ledger = Ledger.load(opts.ledger_path)
    fed = float(np.median(ledger.training_rates()["federated"]))
    assert f"federated {fed:,.0f} (the ledger's median, this CPU)" in text


def test_plan_prices_evaluations_at_the_ledgers_measured_wall_times(study, tmp_path):
    """--plan prices an evaluation at the median wall time of the ledger's evaluations of as many generated
    images, this CPU's first; the benchmark's FID rate only where the ledger has none."""
    import dataclasses
    import shutil

    from fissionvae.studies.fission_ledger import cpu_model

    _, opts, _ = study
    shutil.copytree(opts.out, tmp_path / "page")
    opts = dataclasses.replace(opts, out=tmp_path / "page", fid=True)  # FID cells are not in the ledger: all left
    data = json.loads(opts.ledger_path.read_text())
    cells = list(data["cells"].values())
    assert len(cells) == 7 and all(c["cpu"] == cpu_model() for c in cells)
    for i, cell in enumerate(cells):
        cell["numbers"]["eval_seconds"] = 60.0 * (i + 1)  # 1..7 min
    for cell in cells[:2]:
        cell["cpu"], cell["numbers"]["eval_seconds"] = "Other CPU", 6000.0
    opts.ledger_path.write_text(json.dumps(data))
    gen = cells[0]["numbers"]["generated"]
    line = f"7 evaluations left x {gen:,} generated images: 0.6 h of one CPU core at 5 min each"
    assert f"{line} (the ledger's median, this CPU)" in describe_plan(opts)  # 3..7 min here
    for cell in cells:
        cell["cpu"] = "Other CPU"
    opts.ledger_path.write_text(json.dumps(data))
    assert "at 6 min each (the ledger's median, other CPUs)" in describe_plan(opts)  # 3..7 min and 100 min twice
    for cell in cells:
        cell["numbers"]["generated"] = 20000  # evaluations of another size do not price this one
    opts.ledger_path.write_text(json.dumps(data))
    last = describe_plan(opts).splitlines()[-1]
    assert "images/s with" in last and "the ledger's median" not in last


def test_rates_are_per_cpu_in_the_plan_and_on_the_page(study, tmp_path):
    """A ledger carried between machines: --plan prices runs at this CPU's rates; the page names each run's CPU."""
    import dataclasses
    import shutil

    from fissionvae.studies.fission_ledger import cpu_model, samples_per_second
    from fissionvae.studies.fission_page import rates_sentence, runs_rows

    _, opts, _ = study
    shutil.copytree(opts.out, tmp_path / "page")
    opts = dataclasses.replace(opts, out=tmp_path / "page")
    data = json.loads(opts.ledger_path.read_text())
    fed = sorted(k for k, r in data["runs"].items() if r["mode"] == "federated")
    assert len(fed) >= 2
    for name in fed[1:]:
        data["runs"][name]["cpu"] = "Other CPU"
    opts.ledger_path.write_text(json.dumps(data))
    here = samples_per_second(data["runs"][fed[0]])
    assert f"federated {here:,.0f} (the ledger's median, this CPU)" in describe_plan(opts)
    for name in data["runs"]:
        data["runs"][name]["cpu"] = "Other CPU"
    opts.ledger_path.write_text(json.dumps(data))
    assert "(the ledger's median, other CPUs)" in describe_plan(opts)
    data["runs"][fed[0]]["cpu"] = cpu_model()
    opts.ledger_path.write_text(json.dumps(data))
    s = Study(opts)
    rows, totals = runs_rows(s.plan, s.outcomes(), s.ledger)
    assert sorted(totals["rates"]) == sorted({cpu_model(), "Other CPU"})
    sentence = rates_sentence(totals)
    assert f"on {cpu_model()}: federated runs {here:,.0f}-{here:,.0f} samples/s" in sentence
    assert "on Other CPU:" in sentence
    cpus = [r[-1] for r in rows]
    assert any(c.startswith(cpu_model()) for c in cpus) and any(c.startswith("Other CPU; eval ") for c in cpus)


def test_the_ledger_alone_makes_the_page_when_the_run_folders_are_gone(study, tmp_path):
    import shutil

    root, opts, _ = study
    shutil.copytree(root / "page", tmp_path / "page")
    ledger_before = json.loads((tmp_path / "page" / "mixed_mnist" / "study.json").read_text())
    moved = StudyOptions(**{**opts.__dict__, "runs_dir": tmp_path / "no-runs", "out": tmp_path / "page"})
    md = run_fission_study(moved).read_text()  # no run folder anywhere: nothing is trained or evaluated
    assert not (tmp_path / "no-runs").exists() and "7 of 7 evaluation cells done" in md and "pending (" not in md
    ledger = json.loads((tmp_path / "page" / "mixed_mnist" / "study.json").read_text())
    assert ledger["cells"] == ledger_before["cells"] and ledger["runs"] == ledger_before["runs"]
    assert "generations_table10.png" in md and "loss_table6.png" in md  # figures redrawn from the ledger


def test_shown_tables_come_from_the_ledger_and_are_never_trained(study, tmp_path):
    import shutil

    root, opts, _ = study
    # nothing on disk: --show adds no job, --tables does
    fresh = StudyOptions(
        **{**opts.__dict__, "tables": ("7",), "show": ("6",), "runs_dir": tmp_path / "r", "out": tmp_path / "o"}
    )
    keys = [job.key for job in Study(fresh).jobs()]
    assert keys and all("fission_hld" in k and "fashion" not in k and "learnable" not in k for k in keys)
    assert "fission_hld_fashion_deep " not in describe_plan(fresh) and "--show 6" in fresh.command()
    # from the ledger alone, the shown table is on the page beside the trained one
    shutil.copytree(root / "page", tmp_path / "page")
    shown = StudyOptions(**{**fresh.__dict__, "runs_dir": tmp_path / "no-runs", "out": tmp_path / "page"})
    md = run_fission_study(shown).read_text()
    assert "## Table 6" in md and "## Table 7" in md and "pending (" not in md
    assert not (tmp_path / "no-runs").exists()
    alone = StudyOptions(**{**shown.__dict__, "show": ()})
    assert "## Table 6" not in run_fission_study(alone).read_text()


def test_the_noise_runs_start_first(tmp_path):
    """Every FID verdict waits for the seed noise, so the noise table's runs are trained before the others."""
    opts = StudyOptions(tables=("3", "noise"), scale=Scale(tiny=True), runs_dir=tmp_path / "r", out=tmp_path / "o")
    trains = [job.key for job in Study(opts).jobs() if job.key.startswith("train ")]
    noise = ["fedvae/federated", "fission_ld/federated", "fedvae/federated/seed1", "fission_ld/federated/seed1"]
    assert trains[:4] == [f"train {k}" for k in noise] and len(trains) == 12
    assert trains[4:] == [f"train {s.key}" for s in make_plan(["3"]).runs if s.key not in noise]


def test_an_evaluation_on_another_test_subset_is_not_reused(study):
    """--test-size changes what FID and NLL are measured against, so it is part of an evaluation's identity."""
    import dataclasses

    root, opts, _ = study
    path = next(p for p in sorted((root / "runs").glob("*/eval.json")))
    result, run = json.loads(path.read_text()), RunDir(path.parent)
    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    saved = EvalOptions(**{k: v for k, v in result["options"].items() if k in fields})
    assert saved.test_size is None and common.eval_matches(result, run, saved)
    assert not common.eval_matches(result, run, dataclasses.replace(saved, test_size=30))
    subset = StudyOptions(**{**opts.__dict__, "test_size": 30})
    assert "--test-size 30" in subset.command() and "--test-size" not in opts.command()
    md = run_fission_study(
        StudyOptions(**{**subset.__dict__, "out": root / "subset-page", "evaluate": False})
    ).read_text()
    assert "seeded subset of 30 test images per group" in md


def test_only_restricts_this_call_to_the_named_runs(tmp_path, capsys):
    """--only: a session trains and evaluates the units that fit it; the plan and the jobs hold those runs only."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    argv = ["study", "fission", "--tables", "3,noise", "--preset", "tiny", "--runs-dir", str(tmp_path), "--plan"]
    args = parser.parse_args([*argv, "--only", "fission_d-centralized-tiny, fedvae-seed1-tiny"])
    assert args.only == ("fission_d-centralized-tiny", "fedvae-seed1-tiny") and args.func(args) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == ["fedvae-seed1-tiny", "fission_d-centralized-tiny"]  # the noise run first, as without --only
    opts = StudyOptions(
        tables=("3", "noise"), scale=Scale(tiny=True), runs_dir=tmp_path / "r", only=("fission_d-centralized-tiny",)
    )
    assert [job.key for job in Study(opts).jobs()] == ["train fission_d/centralized", "eval fission_d/centralized/eval"]
    plan = describe_plan(opts)
    assert "\n1 run; training left: " in plan and plan.count("-tiny ") == 1 and "\n2 evaluations left" not in plan
    assert "--only" not in opts.command()  # the page's completion command finishes every cell
    with pytest.raises(ValueError, match=r"--only fission_d-tiny-centralized: not a run of --tables 3,noise; one of "):
        Study(StudyOptions(**{**opts.__dict__, "only": ("fission_d-tiny-centralized",)}))
