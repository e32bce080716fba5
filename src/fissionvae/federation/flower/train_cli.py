"""The Flower engines' part of ``fissionvae train``: its options and ``--engine flower-sim|flower``.

The main CLI adds :func:`add_train_options` to ``train``, refuses them for the in-process
engine with :func:`check_inprocess_options`, and hands Flower runs to :func:`cmd_train_flower`
(new run from ``--config``, or ``--resume RUN_DIR``).

Importing this module does not import ``flwr``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Protocol

from fissionvae.config import RunConfig
from fissionvae.federation.flower import FLOWER_ENGINES
from fissionvae.federation.flower.commands import FlowerRunError
from fissionvae.federation.flower.launch import FlowerOptions
from fissionvae.runs import RunDir


class ResumeConfig(Protocol):
    """The config a resumed run continues with: its saved config plus the overrides a resume allows."""

    def __call__(self, run: RunDir, overrides: list[str] | None = None) -> RunConfig: ...


#: ``fissionvae train`` options that only the Flower engines read (dest, flag)
TRAIN_OPTIONS = (
    ("superlink", "--superlink"),
    ("root_certificates", "--root-certificates"),
    ("round_timeout", "--round-timeout"),
    ("node_wait", "--node-wait"),
    ("client_cpus", "--client-cpus"),
    ("node_bindings", "--node-bindings"),
)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``fissionvae train`` for ``--engine flower-sim|flower`` (``--engine`` itself is the main CLI's)."""
    d = FlowerOptions()
    g = parser.add_argument_group("Flower engines (--engine flower-sim | flower; see docs/flower.md)")
    g.add_argument(
        "--superlink",
        metavar="HOST:PORT",
        help="--engine flower: the SuperLink's control address, 127.0.0.1:<its --control-port> (run this command "
        "on the SuperLink's machine: only there is the control API reachable, and its ServerApp writes the run "
        "folder there)",
    )
    g.add_argument(
        "--root-certificates",
        type=Path,
        metavar="CA_PEM",
        help="--engine flower: CA certificate of a TLS SuperLink (default: plain HTTP, e.g. loopback)",
    )
    g.add_argument(
        "--round-timeout",
        type=float,
        metavar="S",
        help=f"seconds to wait for a round's replies; what arrived is aggregated (default {d.round_timeout:.0f})",
    )
    g.add_argument(
        "--node-wait",
        type=float,
        metavar="S",
        help=f"seconds to wait at start for every logical client's SuperNode (default {d.node_wait:.0f})",
    )
    g.add_argument(
        "--node-bindings",
        type=Path,
        metavar="FILE",
        help="--engine flower: the operator's node-bindings file (`fissionvae flower register --bindings`): "
        "a client is served only by the node whose registered key is bound to it",
    )
    g.add_argument(
        "--client-cpus",
        type=int,
        metavar="N",
        help=f"--engine flower-sim: CPUs per simulated client (default {d.client_cpus})",
    )


def check_inprocess_options(args: argparse.Namespace) -> None:
    """Refuse Flower-only options with ``--engine inprocess`` (they would be silently ignored)."""
    given = [flag for dest, flag in TRAIN_OPTIONS if getattr(args, dest, None) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: only for --engine flower-sim / flower (see docs/flower.md)")


def cmd_train_flower(args: argparse.Namespace, resume_config: ResumeConfig) -> int:
    """``fissionvae train --engine flower-sim|flower`` (new run from --config, or --resume RUN_DIR).

    ``resume_config`` is the main CLI's rule for the config of a resumed run (this package sits
    below ``fissionvae.api`` and does not import it).
    """
    from fissionvae.config import load_config, save_config
    from fissionvae.federation.flower.launch import check_flower_config, check_node_bindings, train_with_flower

    if args.engine not in FLOWER_ENGINES:
        raise ValueError(f"not a Flower engine: {args.engine}")
    if args.engine == "flower" and not args.superlink:
        raise ValueError(
            "--engine flower needs --superlink HOST:PORT (start one with `fissionvae flower superlink`; see "
            "docs/flower.md)"
        )
    if args.engine == "flower-sim" and (args.superlink or args.root_certificates):
        raise ValueError(
            "--engine flower-sim starts its own simulation SuperLink; --superlink and --root-certificates are for "
            "--engine flower"
        )
    if args.engine == "flower-sim" and args.node_bindings is not None:
        raise ValueError("--node-bindings is for --engine flower (simulated nodes have no keys)")
    if args.engine == "flower" and args.client_cpus is not None:
        raise ValueError("--client-cpus is for --engine flower-sim (a deployment's SuperNodes use their own machines)")
    if args.resume:
        run = RunDir.open(args.resume)
        cfg = resume_config(run, args.overrides)
        check_flower_config(cfg)
        if args.overrides:
            save_config(cfg, run.config_path)
    else:
        cfg = load_config(args.config, args.overrides)
        check_flower_config(cfg)  # before the run folder is created
        if args.node_bindings is not None:
            check_node_bindings(args.node_bindings, cfg)
        run = RunDir.create(args.runs_dir, cfg, args.name)
    print(f"run folder: {run.path} (engine {args.engine})", flush=True)
    given = {"round_timeout": args.round_timeout, "node_wait": args.node_wait, "client_cpus": args.client_cpus}
    options = FlowerOptions(
        root_certificates=args.root_certificates,
        node_bindings=args.node_bindings,
        echo=not args.no_progress,
        **{k: v for k, v in given.items() if v is not None},
    )
    try:
        state = train_with_flower(
            cfg, run, args.engine, args.superlink, data_dir=args.data_dir, max_rounds=args.max_rounds, options=options
        )
    except FlowerRunError as exc:
        print(f"fissionvae: error: {exc}", file=sys.stderr)
        return 1
    print(f"run folder: {run.path} ({state.round} round(s) done)")
    return 0
