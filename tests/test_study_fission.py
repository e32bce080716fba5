"""The FissionVAE study: planning, scale presets, the prior-swap evaluation, resumption and the page."""

import argparse
import json

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
from fissionvae.federation.engine import train
from fissionvae.runs import RunDir
from fissionvae.studies import common
from fissionvae.studies.cli import register
from fissionvae.studies.fission import (
    CONFIGS_DIR,
    TABLES,
    EvalSpec,
    Outcome,
    RunSpec,
    Scale,
    StudyOptions,
    describe_plan,
    make_plan,
    parse_tables,
    resolve_config,
    run_fission_study,
)
from fissionvae.studies.fission_page import Cells, baseline_rows, claims, md_table


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
    full = make_plan(TABLES)
    assert len(full.runs) == 20 and len(full.evals) == 23
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
            for mode, ev in row.evals.items():
                cfg = resolve_config(ev.run, scale)
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
        == "fissionvae study fission --dataset mixed_mnist --tables 3,7 --scale 0.25"
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
    assert "20 runs; training left: 357,000,000 sample passes = 19.8 h at 5,000 samples/s" in out  # 15 x 21M + 5 x 8.4M
    assert "23 evaluations x 20,000 generated images" in out
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


def test_claims_compare_the_direction_of_our_numbers_with_the_papers():
    plan = make_plan(["7", "10"])
    cfg = resolve_config(RunSpec("fission_hld"), Scale())
    fids = {"eval": 50.0, "eval-z1-z2-z1": 90.0, "eval-z1": 120.0, "eval-z1-z2-z1-swap": 80.0}
    outcomes = {ev: Outcome(ev, cfg, result=_result(fids[ev.result_name], 0.9)) for ev in plan.evals}
    rows = {r[0].split(":")[0]: r for r in claims(plan, Cells(outcomes, StudyOptions()))}
    assert rows["Table 7"][3] == "same" and rows["Table 7"][2].endswith("50.00, 90.00, 120.00")
    assert rows["Figure 10"][3] == "differs"  # the swap lowered FID here: the check says so
    outcomes[plan.evals[0]].result = None
    assert claims(plan, Cells(outcomes, StudyOptions()))[0][3] == "pending"
    assert md_table(["a"], [["p(x|z1)"]]).splitlines()[-1] == "| p(x\\|z1) |"


def test_baseline_rows_put_fedgan_beside_the_papers_row(tmp_path):
    for mode, fid in (("federated", 120.0), ("centralized", 95.0)):
        folder = tmp_path / mode
        folder.mkdir()
        (folder / "eval.json").write_text(json.dumps(_result(fid, 0.5) | {"name": "fedgan", "mode": mode}))
    (row,) = baseline_rows((tmp_path / "federated", tmp_path / "centralized"))
    assert row[0] == "fedgan (baseline)" and row[1] == "120.00 (118.52)" and row[4] == "95.00 (91.08)"
    with pytest.raises(FileNotFoundError, match="no eval.json"):
        baseline_rows((tmp_path,))


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
    """Tables 6, 7 and Figure 10 on the tiny preset (4 runs, 7 evaluations, no FID), interrupted twice, then
    completed."""
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
        "7 of 7 evaluation cells done, 4 runs" in md and "pending" not in md.split("## Table 6")[1].split("## Runs")[0]
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
    for text in (*expected, "same direction?", "Verdict not written yet"):
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
    cells = json.loads((assets / "study.json").read_text())["cells"]
    assert cells["fission_hld/federated/eval-z1-z2-z1-swap"]["numbers"]["prior_swap"] is True
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
        and "7 of 7 evaluation cells done" in md
        and "[tiny]" in md
        and "--fallback-scale tiny" in md
    )
    assert not list((root / "runs").glob("*-reduced-s0.5-*"))


def test_describe_plan_counts_finished_runs(study):
    _, opts, _ = study
    text = describe_plan(opts)
    assert text.count("finished 2/2") == 4 and "training left: 0 sample passes" in text


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
