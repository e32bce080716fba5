"""The ``fissionvae audit`` sub-command (registered by :func:`register`, like the Flower commands)."""

from __future__ import annotations

from pathlib import Path

from fissionvae import cli_options as opts
from fissionvae.models.vae import PATHWAY_HELP


def register(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="what a trained VAE run leaks: memorisation, membership inference, cross-group -> <run>/audit.json",
    )
    p.add_argument("run", type=Path, help="run folder of a VAE run (runs/<id>)")
    opts.add_num_samples(p, "generated images per group", default_text="1000")
    p.add_argument(
        "--max-train",
        type=int,
        default=2000,
        help="seeded subset of training images per client and per group, and of test images per group (default 2000)",
    )
    p.add_argument("--cells", type=int, default=20, help="k-means cells of the data-copying test (default 20)")
    p.add_argument(
        "--elbo-samples", type=int, default=4, help="posterior draws averaged in each image's -ELBO (default 4)"
    )
    p.add_argument("--no-inception", action="store_true", help="pixel space only (no Inception network needed)")
    p.add_argument(
        "--inception",
        type=Path,
        help="TorchScript FID Inception file (else $FISSIONVAE_INCEPTION, else the cache; see fetch-inception)",
    )
    p.add_argument("--pathway", choices=sorted(PATHWAY_HELP), help="generation pathway (default: the model's)")
    p.add_argument("--allow-unfinished", action="store_true", help="audit a run that stopped before its last round")
    opts.add_device(p, "sampling, the ELBO and the Inception network run")
    opts.add_data_dir(p)
    opts.add_no_progress(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    from fissionvae.audit.run import AuditOptions, audit_run, summary_lines

    options = AuditOptions(
        num_samples=AuditOptions.num_samples if args.num_samples is None else args.num_samples,
        max_train=args.max_train,
        cells=args.cells,
        elbo_samples=args.elbo_samples,
        inception=not args.no_inception,
        inception_path=str(args.inception) if args.inception else None,
        pathway=args.pathway,
        allow_unfinished=args.allow_unfinished,
        data_dir=str(args.data_dir) if args.data_dir else None,
        progress=not args.no_progress,
        device=opts.device_of(args),
    )
    result = audit_run(args.run, options)
    print("\n".join(summary_lines(result)))
    print(f"wrote {Path(args.run) / 'audit.json'}")
    return 0
