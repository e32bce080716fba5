from pathlib import Path

import pytest
from tests.helpers import REPO, tiny_config

from fissionvae.config import ConfigError, load_config

CONFIGS = sorted((REPO / "configs" / "mixed_mnist").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_in_both_modes(path):
    cfg = load_config(path)
    assert cfg.group_names == ["mnist", "fashion"]
    central = load_config(path, ["mode=centralized"])
    assert central.effective_rounds == central.train.centralized_epochs


def test_paper_settings_are_the_defaults_of_paper_configs():
    cfg = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml")
    assert (cfg.train.rounds, cfg.train.local_epochs, cfg.train.batch_size, cfg.train.lr) == (70, 5, 32, 1e-3)
    assert cfg.federation.participation == 0.5 and sum(g.clients for g in cfg.data.groups) == 20
    assert cfg.train.centralized_epochs == 70 and cfg.model.prior == "wave" and cfg.model.decoder_branches


def test_table_one_rows():
    rows = {p.stem: load_config(p).model for p in CONFIGS}
    assert (rows["fedvae"].prior, rows["fedvae"].decoder_branches) == ("identical", False)
    assert (rows["fission_l"].prior, rows["fission_l"].decoder_branches) == ("wave", False)
    assert (rows["fission_d"].prior, rows["fission_d"].decoder_branches) == ("identical", True)
    assert rows["fission_hld"].hierarchical and rows["fission_hld_learnable"].prior == "learnable"


def test_overrides_including_list_items():
    cfg = load_config(
        REPO / "configs/mixed_mnist/fission_ld.yaml",
        ["train.rounds=3", "federation.participation=1.0", "data.groups.1.clients=4"],
    )
    assert cfg.train.rounds == 3 and cfg.federation.participation == 1.0 and cfg.data.groups[1].clients == 4
    with pytest.raises(ConfigError, match="data.groups.7"):
        load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", ["data.groups.7.clients=4"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.roundz=3", "unknown config key\\(s\\): train.roundz"),
        ("train.rounds=three", "train.rounds: expected an integer"),
        ("model.prior=zigzag", "model.prior: 'zigzag' is not one of"),
        ("federation.participation=0", "federation.participation: must be in"),
        ("mode=both", "mode: 'both' is not one of"),
        ("data.groups.0.dataset=cifar", "dataset: unknown dataset 'cifar'"),
        ("model.latent_dim=1", "'wave' needs model.latent_dim >= number of groups"),
        ("train.fused_adam=maybe", "expected true/false"),
    ],
)
def test_bad_values_name_the_option(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", [override])


def test_extends_chain_and_missing_file(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {REPO / 'configs/mixed_mnist/fedvae.yaml'}\nname: child\ntrain: {{rounds: 2}}\n")
    cfg = load_config(child)
    assert cfg.name == "child" and cfg.train.rounds == 2 and cfg.train.local_epochs == 5
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(loop)


def test_group_decoder_needs_branches(tmp_path):
    with pytest.raises(ConfigError, match="decoder_branches"):
        tiny_config(
            tmp_path,
            model={"decoder_branches": False, "prior": "wave"},
            data={"groups": [{"name": "a", "dataset": "mnist", "decoder": {"kind": "conv", "hidden": [8, 8]}}]},
        )


def test_shipped_quick_config_is_small():
    cfg = load_config(REPO / "configs/mixed_mnist/quick.yaml")
    assert all(g.train_size and g.train_size <= 10_000 for g in cfg.data.groups)
    assert cfg.train.rounds <= 20
    assert Path(REPO / "configs/mixed_mnist/quick.yaml").read_text().startswith("#")
