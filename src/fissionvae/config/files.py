"""Config files: YAML presets with ``extends:``, ``--set`` overrides, loading and saving.

A config file is YAML. It may name a parent preset with ``extends: other.yaml`` (a path
relative to the file); the child is deep-merged over the parent. Command-line overrides
(``--set train.rounds=3``) are applied to the merged dictionary before it becomes dataclasses.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from fissionvae.config.parsing import from_dict
from fissionvae.config.rules import validate
from fissionvae.config.schema import ConfigError, RunConfig
from fissionvae.io import atomic_write_text


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` with ``override`` merged in (dicts recursively, anything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml_with_extends(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML preset, resolving ``extends:`` chains relative to each file."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle through {[str(p) for p in _seen]}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = load_yaml_with_extends(path.parent / parent, _seen + (path,))
    return deep_merge(base, raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict.

    List items are addressed by index, e.g. ``data.groups.1.clients=5``.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
        _set_dotted(out, key.strip(), value)
    return out


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, parts, i)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts, len(parts) - 1)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is a value, not a section")


def _list_index(node: list, part: str, parts: list[str], i: int) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not an index of a {len(node)}-item list"
        )
    return int(part)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, raw: dict | None = None
) -> RunConfig:
    """Load, override, type-check and validate a run configuration."""
    base = load_yaml_with_extends(path) if path is not None else copy.deepcopy(raw or {})
    cfg = from_dict(RunConfig, apply_overrides(base, overrides or []))
    validate(cfg)
    return cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved configuration atomically as YAML."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
