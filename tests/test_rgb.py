"""RGB federations: conv models for 32x32x3, every Table 1 model and prior, the stand-in data, RGB evaluation pieces."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import REPO, TABLE1, rgb_config

from fissionvae.config import ConfigError, load_config
from fissionvae.data import standin
from fissionvae.data.federated import load_groups
from fissionvae.data.sources import load_split
from fissionvae.evaluation.classifier import group_scores, train_domain_classifier
from fissionvae.evaluation.evaluate import generate
from fissionvae.evaluation.fid import feature_stats, fid_from_stats, preprocess
from fissionvae.evaluation.floor import FloorModel
from fissionvae.federation.aggregation import aggregate
from fissionvae.federation.client import ClientResult
from fissionvae.federation.engine import train
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_conv_architecture_shapes_and_norms(norm):
    cfg = rgb_config(
        model={
            "prior": "wave",
            "decoder_branches": True,
            "encoder_hidden": [16, 32, 64],
            "encoder_head": [128],
            "decoder": {"kind": "strided", "hidden": [64, 32, 16], "head": [128], "latent_hidden": [16]},
            "norm": norm,
        }
    )
    model = build_model(cfg, (3, 32, 32))
    body = model.encoder["x"].body
    assert body(torch.zeros(2, 3, 32, 32)).shape == (2, 64 * 4 * 4)  # 32 -> 16 -> 8 -> 4
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("BatchNorm2d" in kinds) == (norm == "batch") and ("GroupNorm" in kinds) == (norm == "group")
    assert model.branches[0].x(torch.zeros(2, 8)).shape == (2, 3, 32, 32)  # Gaussian: one mean per channel


def test_gaussian_std_is_one_global_parameter_averaged_over_every_participant():
    model = build_model(rgb_config(groups=2, model={"prior": "wave", "decoder_branches": True}), (3, 32, 32))
    std_keys = [k for k in model.state_dict() if k.endswith("log_std")]
    assert std_keys == ["pixel_scale.log_std"]  # one entry, outside the branches
    assert "pixel_scale.log_std" in model.owned_keys([0]) and "pixel_scale.log_std" in model.owned_keys([1])
    assert not any(k.startswith("branches.1.") for k in model.owned_keys([0]))
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def reply(cid, group, value, n):
        w = {k: weights[k].clone() for k in model.owned_keys([group])}
        w["pixel_scale.log_std"] = torch.tensor(value)
        return ClientResult(cid, [group], n, w)

    # one client of each group: the std is averaged across groups, weighted by sample count
    new = aggregate(weights, [reply(0, 0, -1.0, 100), reply(1, 1, -2.0, 300)])
    assert new["pixel_scale.log_std"].item() == pytest.approx(-1.75)
    model.load_state_dict(new)
    assert [br.likelihood.log_std.item() for br in model.branches] == [pytest.approx(-1.75)] * 2
    # its Adam learning rate is its own (model.gaussian_std_lr), the rest train at train.lr
    opt = model.local_optimizer([0], 1e-4, fused=False)
    assert [(len(g["params"]), g["lr"]) for g in opt.param_groups][1] == (1, 0.01)
    assert opt.param_groups[1]["params"][0] is model.pixel_scale.log_std


def test_rgb_configs_load_with_the_paper_settings():
    charm = {p.stem: load_config(p) for p in sorted((REPO / "configs" / "charm").glob("[!_]*.yaml"))}
    assert set(charm) == {*TABLE1, "fission_ld_dlml", "fission_hld_dlml", "fedgan"}
    gan = charm.pop("fedgan")  # the baseline: same data and federation, DCGAN's own learning rate
    assert (
        gan.model.kind == "dcgan"
        and gan.train.lr == 2e-4
        and gan.data == charm["fedvae"].data
        and gan.federation == charm["fedvae"].federation
    )
    assert (gan.train.rounds, gan.train.local_epochs, gan.train.centralized_epochs) == (500, 5, 250)
    for cfg in charm.values():
        t = cfg.train
        assert (t.rounds, t.local_epochs, t.batch_size, t.lr, t.centralized_epochs) == (500, 5, 32, 1e-4, 250)
        assert cfg.federation.participation == 0.25 and [g.clients for g in cfg.data.groups] == [20] * 5
        assert all(g.folder.size == 32 for g in cfg.data.groups)
    assert charm["fission_ld_dlml"].model.likelihood == "dlml" and charm["fission_ld"].model.likelihood == "gaussian"
    assert charm["fission_hld_dlml"].model.hierarchical and charm["fission_hld_learnable"].model.prior == "learnable"
    quick = {p.stem: load_config(p) for p in sorted((REPO / "configs" / "rgb_quick").glob("[!_]*.yaml"))}
    assert quick.pop("fedgan").data == quick["fedvae"].data
    assert set(quick) == set(charm)
    assert all(g.dataset.endswith("-rgb") for cfg in quick.values() for g in cfg.data.groups)
    for cfg in (*charm.values(), *quick.values()):
        assert (
            load_config(raw=cfg.to_dict(), overrides=["mode=centralized"]).effective_rounds
            == cfg.train.centralized_epochs
        )
    with pytest.raises(ConfigError, match="dlml_components"):
        load_config(REPO / "configs" / "rgb_quick" / "fission_ld.yaml", ["model.dlml_components=0"])


def test_standin_images_are_fixed_colourised_and_padded(shared_data_dir):
    cfg = rgb_config(shared_data_dir, groups=2)
    a = load_groups(cfg)[0]
    assert a.train_images.shape == (200, 3, 32, 32) and a.test_images.shape == (100, 3, 32, 32)
    border = (a.train_images[:, :, 0, 0] * 255).round()
    assert (
        (a.train_images[:, :, :2, :] * 255).round() == border[:, :, None, None]
    ).all()  # padding = background colour
    assert border.max() <= 128  # backgrounds are dark: U[0, 0.5]^3
    # an image's colours depend on (dataset, split, index) only, not on which subset is drawn
    grey = load_split("mnist", "train", shared_data_dir, download=False)[0]
    one = standin.standin_images("mnist-rgb", "train", grey, np.array([5, 17, 40]))
    two = standin.standin_images("mnist-rgb", "train", grey, np.array([17, 99]))
    assert np.array_equal(one[1], two[0]) and not np.array_equal(
        one[1], standin.standin_images("fashion-mnist-rgb", "train", grey, np.array([17]))[0]
    )
    img = standin.colourise(np.full((1, 28, 28), 255, np.uint8), np.array([[[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]]]))
    assert (
        img.shape == (1, 3, 32, 32)
        and img[0, :, 0, 0].tolist() == [26, 51, 76]
        and img[0, :, 16, 16].tolist() == [230, 204, 178]
    )


def test_rgb_evaluation_pieces_keep_colour_and_any_number_of_groups():
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0] = 1.0  # pure red
    pre = preprocess(x)
    assert (
        pre.shape == (1, 3, 299, 299) and pre[0, 0].mean() > 0.99 and pre[0, 1].mean() < -0.99
    )  # not repeated from one channel
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    groups = []
    for gi in range(3):  # three groups of 32x32x3 images, two classes each (bright / dark)
        labels = torch.arange(60) % 2
        imgs = colours[gi].view(1, 3, 1, 1) * (0.5 + 0.5 * labels.view(-1, 1, 1, 1)) + 0.05 * torch.rand(
            60, 3, 32, 32, generator=g
        )
        groups.append((f"g{gi}", (imgs.clamp(0, 1) * 255).round().to(torch.uint8), labels.numpy()))
    clf = train_domain_classifier(groups, epochs=4, batch_size=20, progress=False)
    assert clf.num_classes == 6 and clf.in_channels == 3 and clf.image_size == 32
    assert clf.accuracy(groups) > 0.9
    assert group_scores(clf, groups[2][1], 2)["purity"] == 1.0


def luminance_features(images: torch.Tensor) -> np.ndarray:
    """Colour-free shape features: per-image standardised luminance, 4x4-average-pooled to 8x8 (64-d)."""
    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    lum = x.mean(1, keepdim=True)
    lum = (lum - lum.mean((2, 3), keepdim=True)) / lum.std((2, 3), keepdim=True).clamp_min(1e-3)
    return F.avg_pool2d(lum, 4).flatten(1).double().numpy()


def test_short_rgb_federation_learns_and_each_branch_generates_its_own_group(tmp_path, shared_data_dir):
    """FissionVAE+L+D, Gaussian likelihood, on the stand-in: the loss falls and group g's branch
    generates images nearer (Frechet distance of shape features; Inception-FID would take minutes
    on this CPU) to group g's test images than to the other group's."""
    cfg = rgb_config(
        shared_data_dir,
        groups=2,
        model={
            "prior": "wave",
            "decoder_branches": True,
            "encoder_hidden": [8, 16, 32],
            "encoder_head": [64],
            "decoder": {"kind": "strided", "hidden": [32, 16, 8], "head": [64], "latent_hidden": [16]},
        },
        federation={"participation": 1.0},
        train={"rounds": 4, "local_epochs": 1, "lr": 0.003},
    )
    cfg.data.groups[0].train_size = cfg.data.groups[1].train_size = 1000
    cfg.data.groups[0].test_size = cfg.data.groups[1].test_size = 300
    run = RunDir.create(tmp_path, cfg)
    state = train(cfg, run, progress=False)
    rounds = [m for m in run.metrics() if m["type"] == "round"]
    groups = load_groups(cfg)
    test = torch.cat([g.test_images[: cfg.eval.test_per_group] for g in groups])
    floor = FloorModel.fit(torch.cat([g.train_images for g in groups]), "gaussian").nll(test).mean().item()
    # the negative ELBO (a bound: recon + KL) ends below the per-pixel Gaussian floor's exact NLL
    assert rounds[-1]["test/loss"] < rounds[0]["test/loss"] and rounds[-1]["test/loss"] < floor, floor
    assert (run.images_dir / "samples_g1.png").is_file()
    model = build_model(cfg, (3, 32, 32))
    model.load_state_dict(state.weights)
    model.eval()
    real = [feature_stats(luminance_features(g.test_images)) for g in groups]
    for gi in range(2):
        fake = feature_stats(luminance_features(generate(model, gi, 300, cfg.seed, None)))
        own, other = fid_from_stats(real[gi], fake), fid_from_stats(real[1 - gi], fake)
        assert own < 0.85 * other, (gi, own, other)
