"""Typed run configuration: YAML presets -> dataclasses, strict and validated.

One idea per module:

* :mod:`.schema` - the dataclasses (every section, its defaults) and :class:`ConfigError`;
* :mod:`.parsing` - the generic typed parser (unknown keys and wrong types name the dotted key);
* :mod:`.files` - YAML files with ``extends:``, ``--set`` overrides, load and save;
* :mod:`.rules` - cross-field validation (e.g. ``wave`` priors need ``latent_dim >= groups``),
  checked by :func:`validate` before any data is read or any file written.
"""

from fissionvae.config.files import apply_overrides, deep_merge, load_config, load_yaml_with_extends, save_config
from fissionvae.config.parsing import from_dict
from fissionvae.config.rules import (
    check_client_counts,
    check_max_rounds,
    check_override_applies,
    check_run_name,
    check_subset_sizes,
    group_image_shape,
    validate,
)
from fissionvae.config.schema import (
    KNOWN_DATASETS,
    PRIOR_STRATEGIES,
    ConfigError,
    DataConfig,
    DecoderConfig,
    EvalConfig,
    FederationConfig,
    FolderConfig,
    GanConfig,
    GroupConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "KNOWN_DATASETS",
    "PRIOR_STRATEGIES",
    "ConfigError",
    "DataConfig",
    "DecoderConfig",
    "EvalConfig",
    "FederationConfig",
    "FolderConfig",
    "GanConfig",
    "GroupConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_client_counts",
    "check_max_rounds",
    "check_override_applies",
    "check_run_name",
    "check_subset_sizes",
    "deep_merge",
    "from_dict",
    "group_image_shape",
    "load_config",
    "load_yaml_with_extends",
    "save_config",
    "validate",
]
