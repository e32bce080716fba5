"""Rendering of a results page: a list of blocks written once as Markdown and once as static HTML.

A block is a tuple: ``("h", level, text)``, ``("p", text)``, ``("ul", [items])``,
``("table", headers, rows)``, ``("img", file, alt)`` or ``("md", text)`` (Markdown kept as it is).
"""

from __future__ import annotations

import html
import os
import platform
import re

import torch

from fissionvae.evaluation.report import _html_table

Block = tuple
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:12px;margin-bottom:1em}"
    "td,th{border:1px solid #bbb;padding:4px;vertical-align:top}code{background:#f3f3f3}"
)


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\[([^\]]+)\]\((#[\w-]+)\)", r"<a href='\2'>\1</a>", out)
    out = re.sub(r"^_(.+)_$", r"<i>\1</i>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; '|' inside cells is escaped (p(x|z1) stays readable)."""

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]) + "\n"


def render_md(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append("#" * b[1] + " " + b[2] + "\n")
        elif kind == "p":
            parts.append(b[1] + "\n")
        elif kind == "ul":
            parts.append("\n".join(f"- {x}" for x in b[1]) + "\n")
        elif kind == "table":
            parts.append(md_table(b[1], b[2]))
        elif kind == "img":
            parts.append(f"![{b[2]}]({b[1]})\n")
        elif kind == "md":
            parts.append(b[1].rstrip() + "\n")
    return "\n".join(parts)


def render_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            slug = re.sub(r"[^\w]+", "-", b[2].lower()).strip("-")
            body.append(f"<h{b[1]} id='{slug}'>{_inline_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            body.append(_html_table(b[1], [[c.replace("`", "") for c in r] for r in b[2]]))
        elif kind == "img":
            body.append(f"<p><img src='{html.escape(b[1])}' alt='{html.escape(b[2])}' style='max-width:100%'></p>")
        elif kind == "md":
            body.append(f"<div style='white-space:pre-wrap'>{_inline_html(b[1])}</div>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def machine() -> str:
    from fissionvae.studies.fission_ledger import cpu_model

    cpu = cpu_model()
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} CPU cores ({cpu}), {system}, torch {torch.__version__}"
