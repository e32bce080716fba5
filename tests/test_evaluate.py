"""``evaluate`` and ``report`` on tiny real runs, with the real FID extractor."""

import json
import math

import numpy as np
import pytest
from tests.helpers import tiny_config

from fissionvae.evaluation import evaluate as ev
from fissionvae.evaluation import metrics
from fissionvae.evaluation.evaluate import EvalOptions, evaluate_run, pooled_stats, split_counts
from fissionvae.evaluation.fid import InceptionFeatures, feature_stats
from fissionvae.evaluation.report import make_report, model_label, paper_numbers
from fissionvae.evaluation.runtimes import RuntimeFeatures, resolve_runtime
from fissionvae.federation.engine import train
from fissionvae.federation.state import CheckpointError
from fissionvae.runs import RunDir, RunDirError

SMALL = {
    "groups": [
        {"name": "mnist", "dataset": "mnist", "clients": 2, "train_size": 400, "test_size": 60},
        {"name": "fashion", "dataset": "fashion-mnist", "clients": 2, "train_size": 400, "test_size": 60},
    ]
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data_dir):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for mode in ("federated", "centralized"):
        cfg = tiny_config(shared_data_dir, mode=mode, data=SMALL, train={"rounds": 2})
        run = RunDir.create(root, cfg, mode)
        train(cfg, run, progress=False)
        out[mode] = run
    return out


def test_pooled_stats_equal_stats_of_the_union():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(2.0, 3.0, size=(80, 4))
    pooled, union = pooled_stats([feature_stats(a), feature_stats(b)]), feature_stats(np.concatenate([a, b]))
    assert pooled.n == 130 and np.allclose(pooled.mu, union.mu) and np.allclose(pooled.sigma, union.sigma)


def test_split_counts_is_proportional_and_exact():
    assert split_counts(20000, [10000, 10000]) == [10000, 10000]
    assert split_counts(7, [100, 200, 400]) == [1, 2, 4]
    assert sum(split_counts(1001, [3, 5, 9])) == 1001


def test_evaluate_writes_all_metrics_and_resumes_from_cache(runs, isolated_cache, monkeypatch):
    run = runs["federated"]
    opts = EvalOptions(iw_samples=5, inception=isolated_cache, tsne_points=60, progress=False)
    result = evaluate_run(run.path, opts)
    saved = json.loads((run.path / "eval.json").read_text())
    assert saved["weights_sha256"] == result["weights_sha256"] and not saved["reduced"]
    assert saved["num_samples"] == saved["eval_images"] == 120 and saved["samples_per_group"] == {
        "mnist": 60,
        "fashion": 60,
    }
    assert saved["fid"]["per_group"]["mnist"]["generated"] == 60 and saved["fid"]["overall"] > 0
    # the default runtime (auto) is fp32 whichever it picks, and eval.json says which
    assert saved["fid"]["runtime"] == resolve_runtime("auto") and saved["options"]["fid_runtime"] == "auto"
    assert saved["fid"]["precision"] == "fp32" and saved["fid"]["paper_comparable"] is True
    assert all(0 <= g["purity"] <= 1 for g in saved["classifier"]["per_group"].values())
    assert 1 <= saved["classifier"]["is_domain"]["mean"] <= 20
    nll = saved["nll"]["overall"]
    assert nll["iw"]["nats_per_image"] <= nll["neg_elbo"]["nats_per_image"]
    assert math.isclose(nll["neg_elbo"]["bits_per_dim"], nll["neg_elbo"]["nats_per_image"] / 784 / math.log(2))
    for name in (
        "samples_mnist_16x16.png",
        "samples_fashion_16x16.png",
        "tsne_latent.png",
        "tsne_real_vs_generated.png",
    ):
        assert (run.path / "eval" / name).stat().st_size > 1000

    # a second evaluation reuses cached features and NLL: the extractor is never called
    def boom(self, images):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(InceptionFeatures, "__call__", boom)
    monkeypatch.setattr(RuntimeFeatures, "__call__", boom)
    monkeypatch.setattr(metrics, "nll_report", lambda *a, **k: (_ for _ in ()).throw(AssertionError("NLL recomputed")))
    again = evaluate_run(run.path, EvalOptions(iw_samples=5, inception=isolated_cache, tsne=False, progress=False))
    assert again["fid"]["overall"] == pytest.approx(result["fid"]["overall"])
    # another sample count is another evaluation, but the NLL depends only on the weights and the
    # test images: it is reused, not recomputed
    other = evaluate_run(
        run.path,
        EvalOptions(num_samples=40, iw_samples=5, fid=False, tsne=False, progress=False, result_name="eval-40"),
    )
    assert other["num_samples"] == 40 and other["nll"] == saved["nll"]


def test_reduced_evaluation_is_flagged(runs, isolated_cache):
    result = evaluate_run(
        runs["centralized"].path,
        EvalOptions(num_samples=40, iw_samples=2, inception=isolated_cache, tsne=False, progress=False),
    )
    assert (
        result["reduced"]
        and result["num_samples"] == 40
        and result["samples_per_group"] == {"mnist": 20, "fashion": 20}
    )


def test_unavailable_fid_runtime_is_a_one_line_error_before_any_write(runs, isolated_cache, monkeypatch, capsys):
    from fissionvae.cli import main
    from fissionvae.evaluation import runtimes

    monkeypatch.setattr(runtimes, "installed", lambda name: name == "torch")
    run = runs["centralized"].path
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert (
        main(["evaluate", str(run), "--fid-runtime", "openvino", "--inception", isolated_cache, "--no-progress"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == "fissionvae: error: --fid-runtime openvino: the package 'openvino' is not installed"
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_summary_flags_bf16_fid_as_a_quick_look():
    result = {
        "name": "r",
        "mode": "federated",
        "round": 1,
        "rounds_planned": 1,
        "num_samples": 4,
        "reduced": False,
        "fid": {"overall": 3.0, "per_group": {"a": {"fid": 3.0}}, "precision": "bf16", "paper_comparable": False},
        "classifier": {"is_domain": {"mean": 1.0, "std": 0.0}, "per_group": {"a": {"purity": 1.0}}},
        "nll": {"skipped": "GAN"},
    }
    assert "quick look, not comparable" in ev.summary_lines(result)[1]
    result["fid"] |= {"precision": "fp32", "paper_comparable": True}
    assert ev.summary_lines(result)[1] == "FID overall 3.00 (per group: a 3.00)"


def test_bad_runs_give_clear_errors_and_write_nothing(tmp_path, shared_data_dir, isolated_cache):
    cfg = tiny_config(shared_data_dir, data=SMALL, train={"rounds": 2})
    run = RunDir.create(tmp_path, cfg, "half")
    train(cfg, run, max_rounds=1, progress=False)
    before = sorted(p.name for p in run.path.rglob("*"))
    with pytest.raises(RunDirError, match="stopped at round 1 of 2"):
        evaluate_run(run.path, EvalOptions(inception=isolated_cache))
    with pytest.raises(FileNotFoundError, match="fetch-inception"):
        evaluate_run(run.path, EvalOptions(inception=str(tmp_path / "missing.pt"), allow_unfinished=True))
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[:100])
    with pytest.raises(CheckpointError):
        evaluate_run(run.path, EvalOptions(inception=isolated_cache, allow_unfinished=True))
    assert sorted(p.name for p in run.path.rglob("*")) == before
    with pytest.raises(RunDirError, match="not a run folder"):
        evaluate_run(tmp_path)


def test_report_from_two_runs(runs, isolated_cache, tmp_path):
    for mode, run in runs.items():  # the same evaluations as the tests above, if they did not run
        if not (run.path / "eval.json").is_file():
            n = None if mode == "federated" else 40
            evaluate_run(
                run.path, EvalOptions(num_samples=n, iw_samples=2, inception=isolated_cache, tsne=False, progress=False)
            )
    md = make_report([r.path for r in runs.values()], tmp_path / "report").read_text()
    assert "fed FID" in md and "central FID" in md and "FissionVAE+L+D (wave)" in md
    assert "paper 42.11" in md and "paper 34.39" in md  # Table 3 +L+D, federated and centralised
    assert "n=120" in md and "n=40 REDUCED" in md and "(paper 3.04*" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in html and html.count("src='data:image/png;base64,") == 5  # self-contained: curves + 4 grids
    assert "loss_curves.png" not in html and "images/" not in html
    assert (tmp_path / "report" / "loss_curves.png").stat().st_size > 1000
    assert len(list((tmp_path / "report" / "images").glob("*.png"))) == 4
    floor = next(line for line in md.splitlines() if line.startswith("| mean-image floor (no learning)"))
    assert "(its mean image, repeated; n=120)" in floor and "(exact; mnist 0." in floor
    assert "STALE: older" not in md and "WARNING" not in md
    # an evaluation of other weights than the checkpoint holds is flagged, not shown as current
    path = runs["federated"].path / "eval.json"
    saved = path.read_text()
    path.write_text(json.dumps(json.loads(saved) | {"weights_sha256": "0" * 64, "round": 1}))
    try:
        md = make_report([r.path for r in runs.values()], tmp_path / "report-stale").read_text()
    finally:
        path.write_text(saved)
    assert "STALE: older than the checkpoint" in md and "WARNING:" in md and "eval.json is of round 1" in md
    unevaluated = RunDir.create(tmp_path, runs["federated"].load_config(), "noeval")
    with pytest.raises(RunDirError, match="not evaluated yet"):
        make_report([unevaluated.path], tmp_path / "r2")


def test_paper_lookup(tmp_path):
    cfg = tiny_config(tmp_path, model={"prior": "one-hot", "hierarchical": True})
    assert model_label(cfg) == "FissionVAE+H+L+D (one-hot)" and paper_numbers(cfg) == (53.22, 2.97, None)
    assert paper_numbers(
        tiny_config(tmp_path, mode="centralized", model={"prior": "identical", "decoder_branches": False})
    ) == (40.59, 3.62, 0.18)
    # Table 3's +H+L+D row is the learnable prior: a centralised +H+L+D wave has no paper number
    hld = {"hierarchical": True, "decoder_branches": True}
    assert paper_numbers(tiny_config(tmp_path, mode="centralized", model=hld | {"prior": "wave"})) is None
    assert paper_numbers(tiny_config(tmp_path, mode="centralized", model=hld | {"prior": "learnable"})) == (
        28.82,
        3.16,
        0.24,
    )
    assert paper_numbers(tiny_config(tmp_path, model=hld | {"prior": "wave"})) == (53.68, 2.94, None)
