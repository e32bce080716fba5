"""One-off: config digests recorded between the new config keys and LATER_DEFAULTS get today's digest.

Config keys added in #16/#17 (federation.aggregator, trim_fraction, clip_norm, max_failed_rounds,
decoder output_norm, model.gaussian_std*) changed every config's digest, so the s=0.05 cells
stopped matching their configs (the campaign's page fell back to nothing) while the paper-scale
cells recorded since carry the interim digest. ``comparable`` now leaves those keys out at their
behaviour-preserving defaults (:data:`fissionvae.studies.common.LATER_DEFAULTS`), which gives the
s=0.05 cells their digests back. This rewrites an entry's digest only after checking that it is
the interim digest of the config its name resolves to. Run once from the repository root:
``python docs/results/mixed_mnist/migrate_digests_v2.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from fissionvae.config import PrivacyConfig
from fissionvae.io import atomic_write_json
from fissionvae.studies.common import IGNORED_KEYS, config_digest
from fissionvae.studies.fission_options import Scale, resolve_config
from fissionvae.studies.fission_plan import make_plan

LEDGER = Path(__file__).resolve().parent / "study.json"


def interim_digest(cfg) -> str:
    """The digest as computed before LATER_DEFAULTS (IGNORED_KEYS and the privacy rule only)."""
    out = cfg.to_dict()
    for section, key in IGNORED_KEYS:
        out[section].pop(key, None)
    if out.get("privacy") == dataclasses.asdict(PrivacyConfig()):
        del out["privacy"]
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()


def main() -> None:
    data = json.loads(LEDGER.read_text())
    configs = {}
    for scale in (Scale(), Scale.parse("0.05")):
        for spec in make_plan().runs:
            cfg = resolve_config(spec, scale)
            configs[cfg.name] = cfg
    changed = 0
    for kind, entries in (("cell", data["cells"]), ("run", data["runs"])):
        for key, entry in entries.items():
            name = entry.get("config", key)
            cfg = configs[name]
            new = config_digest(cfg)
            if entry["config_sha256"] == new:
                continue
            if entry["config_sha256"] != interim_digest(cfg):
                raise SystemExit(
                    f"{kind} {key}: digest {entry['config_sha256'][:12]} is neither today's nor the interim one"
                )
            entry["config_sha256"] = new
            changed += 1
            print(f"{kind} {key}: interim digest -> {new[:12]}")
    atomic_write_json(LEDGER, data)
    print(f"{changed} entries rewritten")


if __name__ == "__main__":
    main()
