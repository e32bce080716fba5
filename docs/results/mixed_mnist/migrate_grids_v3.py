"""One-off: give the reduced (s=0.05) cells of the ledger their 5 x 5 generation grids back.

The reduced cells came into the ledger (migrate_ledger_v1.py) without grids, because their run
folders were gone; their pictures survived only inside the table figures committed with the
reduced page (commit 5d3fae6). Once a paper-scale cell changes a table, its figure is redrawn from
the ledger alone and those rows read "pending". This script cuts each reduced cell's grid out of
the committed figure, at the position ``fissionvae.viz.save_mosaic`` pasted it, after checking
that the layout computed for the figure's labels gives exactly the committed image's size and that
each cut tile is a grid (not blank), and records it under ``cells/`` in the ledger. Run it once
from the repository root, with the study stopped (it rewrites study.json):
``python docs/results/mixed_mnist/migrate_grids_v3.py``.
"""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fissionvae.io import atomic_write_json
from fissionvae.studies.fission_figures import short
from fissionvae.studies.fission_plan import make_plan
from fissionvae.viz import _font

HERE = Path(__file__).resolve().parent
COMMIT = "5d3fae6"  # the reduced page's figures
SCALE = "reduced-s0.05"
GROUPS = ("mnist", "fashion")


def committed_png(name: str) -> Image.Image:
    data = subprocess.run(
        ["git", "show", f"{COMMIT}:docs/results/mixed_mnist/{name}"], capture_output=True, check=True
    ).stdout
    return Image.open(io.BytesIO(data)).convert("L")


def layout(rows: list[str], cols: list[str], ch: int, cw: int) -> tuple[int, int, tuple[int, int]]:
    """(label_w, head, image size) exactly as save_mosaic computes them."""
    font, pad, line = _font(), 6, 14
    wrapped = [textwrap.wrap(label, 24) or [""] for label in rows]
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_w = 10 + int(max((draw.textlength(x, font=font) for w in wrapped for x in w), default=40))
    head = line * max(len(textwrap.wrap(c, max(8, cw // 7))) for c in cols) + pad
    return label_w, head, (label_w + len(cols) * (cw + pad), head + len(rows) * (ch + pad))


def main() -> None:
    ledger_path = HERE / "study.json"
    ledger = json.loads(ledger_path.read_text())
    tile = Image.open(next((HERE / "cells").glob("full_*_mnist.png"))).convert("L")
    cw, ch = tile.size
    done = 0
    for t in make_plan(("3", "5", "6", "7", "10")).tables:
        cols = [(m, g) for m in t.columns for g in GROUPS]
        labels = [f"{short(m)} {g}" if len(t.columns) > 1 else g for m, g in cols]
        figure = committed_png(f"generations_table{t.key}.png")
        label_w, head, size = layout([r.label for r in t.rows], labels, ch, cw)
        if figure.size != size:
            raise SystemExit(f"table {t.key}: committed figure is {figure.size}, layout gives {size}")
        pixels = np.asarray(figure)
        for i, r in enumerate(t.rows):
            for j, (m, g) in enumerate(cols):
                entry = ledger["cells"].get(f"{SCALE}/{r.evals[m].key}")
                if entry is None or entry.get("grids", {}).get(g):
                    continue
                x, y = label_w + j * (cw + 6), head + i * (ch + 6)
                cut = pixels[y : y + ch, x : x + cw]
                if cut.mean() > 200:  # blank or "pending": nothing to recover
                    continue
                name = f"{SCALE}_{r.evals[m].key.replace('/', '_')}_{g}.png"
                Image.fromarray(cut).save(HERE / "cells" / name)
                entry.setdefault("grids", {})[g] = name
                done += 1
    atomic_write_json(ledger_path, ledger)
    print(f"{done} grids recovered")


if __name__ == "__main__":
    main()
