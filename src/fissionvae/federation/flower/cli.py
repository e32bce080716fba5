"""``fissionvae flower ...`` commands and the Flower engines of ``fissionvae train``.

- ``fissionvae flower superlink`` / ``supernode``: start Flower's ``flower-superlink`` /
  ``flower-supernode`` in the foreground with our settings (FLWR_HOME, runtime dependency
  installation off, node config from ``--group``/``--partition``); Ctrl-C or SIGTERM stops the
  process and its children by PID. Each prints the plain Flower command it runs.
- ``fissionvae flower certs`` / ``keys`` / ``register``: TLS certificates, SuperNode key pairs,
  and ``flwr supernode register`` for node authentication.
- ``fissionvae train --engine flower-sim|flower``: :mod:`.train_cli` (re-exported here for the
  main CLI).

Importing this module does not import ``flwr``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from fissionvae.federation.flower.bindings import NodeBinding, add_binding, read_bindings
from fissionvae.federation.flower.commands import (
    FlowerRunError,
    TLSFiles,
    flower_env,
    gate_argv,
    register_node,
    superlink_argv,
    supernode_argv,
    write_connection,
)
from fissionvae.federation.flower.processes import ProcessSet
from fissionvae.federation.flower.train_cli import (  # noqa: F401 (the main CLI's entry points)
    add_train_options,
    check_inprocess_options,
    cmd_train_flower,
)

DEFAULT_HOME = Path("flower-home")


# --------------------------------------------------------------------------- foreground processes


def _foreground(commands: list[tuple[str, list[str]]], env: dict[str, str]) -> int:
    """Run Flower processes attached to this terminal until one exits; stop all (and children) by PID."""
    for _, argv in commands:
        print(f"+ FLWR_HOME={shlex.quote(env['FLWR_HOME'])} {shlex.join(argv)}", flush=True)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with ProcessSet() as procs:
            started = [procs.start(name, argv, env, inherit_output=True) for name, argv in commands]
            try:
                while all(p.running() for p in started):
                    time.sleep(0.2)
                return next(p.popen.returncode for p in started if not p.running())
            except KeyboardInterrupt:
                return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tls_from_args(args) -> TLSFiles | None:
    if args.insecure:
        if args.certs or args.ssl_certfile:
            raise ValueError("--insecure and TLS certificate options exclude each other")
        return None
    if args.certs:
        d = Path(args.certs)
        return TLSFiles(d / "ca.crt", d / "server.pem", d / "server.key")
    if args.ssl_certfile and args.ssl_keyfile and args.ssl_ca_certfile:
        return TLSFiles(Path(args.ssl_ca_certfile), Path(args.ssl_certfile), Path(args.ssl_keyfile))
    raise ValueError(
        "choose TLS (--certs DIR, or --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile) or --insecure (plain HTTP, "
        "loopback/trusted networks only)"
    )


def cmd_superlink(args) -> int:
    """The SuperLink on loopback (``--control-port``: runs, registration), the Fleet API gate on ``--host:--port``."""
    tls = _tls_from_args(args)
    for f in (tls.ca_cert, tls.server_cert, tls.server_key) if tls else ():
        if not f.is_file():
            raise FileNotFoundError(f"TLS file not found: {f}")
    if args.control_port == args.port:
        raise ValueError(f"--control-port {args.control_port}: must differ from --port (the nodes' port)")
    home = Path(args.home) if args.home else DEFAULT_HOME / "superlink"
    home.mkdir(parents=True, exist_ok=True)
    database = None if args.in_memory else home / "superlink.db"
    superlink = superlink_argv(
        "127.0.0.1",
        args.control_port,
        simulation=args.simulation,
        tls=tls,
        node_auth=args.node_auth,
        database=database,
    )
    commands = [("flower-superlink", superlink)]
    if not args.simulation:  # simulated nodes need no Fleet API
        gate = gate_argv(f"{args.host}:{args.port}", f"127.0.0.1:{args.control_port}", tls)
        commands.append(("fleet gate", gate))
    return _foreground(commands, flower_env(home))


def _node_config_from_args(args) -> dict:
    """The node config naming one logical client: ``--group`` + ``--partition``, or ``--client-id``."""
    if (args.group is None) == (args.client_id is None):
        raise ValueError("give --group and --partition, or --client-id")
    if args.group is not None and args.partition is None:
        raise ValueError("--group needs --partition (0-based index of this node's share of the group)")
    if args.group is not None:
        return {"group": args.group, "partition": args.partition}
    return {"client-id": args.client_id}


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", help="group name (or index) of the node's client, e.g. mnist")
    parser.add_argument("--partition", type=int, help="0-based partition index within the group (0 .. clients-1)")
    parser.add_argument("--client-id", type=int, help="logical client id instead of --group/--partition")


def cmd_supernode(args) -> int:
    if args.insecure == (args.root_certificates is not None):
        raise ValueError("give --root-certificates CA_PEM (TLS SuperLink) or --insecure (plain HTTP)")
    node_config = _node_config_from_args(args)
    if args.data_dir is not None:
        node_config["data-dir"] = str(Path(args.data_dir).resolve())
    label = f"{args.group}-{args.partition}" if args.group is not None else f"client-{args.client_id}"
    home = Path(args.home) if args.home else DEFAULT_HOME / f"supernode-{label}"
    home.mkdir(parents=True, exist_ok=True)
    argv = supernode_argv(
        args.superlink,
        node_config,
        port=args.port,
        root_certificates=args.root_certificates,
        auth_private_key=args.auth_key,
        max_retries=args.max_retries,
    )
    return _foreground([("flower-supernode", argv)], flower_env(home))


def cmd_certs(args) -> int:
    from fissionvae.federation.flower.security import generate_certificates

    # the gate reaches the SuperLink on loopback: its certificate must name it there too
    hosts = list(dict.fromkeys([*(args.host or []), "127.0.0.1", "localhost"]))
    files = generate_certificates(args.out, hosts, args.days)
    print(
        f"wrote {files.ca_cert} (give to every SuperNode and to `train --root-certificates`), {files.server_cert}, "
        f"{files.server_key} (SuperLink only; keep private), {Path(args.out) / 'ca.key'} (keep private)"
    )
    return 0


def cmd_keys(args) -> int:
    from fissionvae.federation.flower.security import generate_node_keys

    private, public = generate_node_keys(args.out, args.name)
    print(
        f"wrote {private} (stays on the SuperNode: --auth-key) and {public} (register it: fissionvae flower register "
        f"{public} --superlink ...)"
    )
    return 0


def cmd_register(args) -> int:
    """Register a node key on this machine's SuperLink and bind it to the client it may serve."""
    if args.insecure == (args.root_certificates is not None):
        raise ValueError("give --root-certificates CA_PEM (TLS SuperLink) or --insecure (plain HTTP)")
    node_config = _node_config_from_args(args)
    public_key = Path(args.public_key)
    try:
        key_text = public_key.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{public_key}: cannot read the public key ({exc})") from None
    if args.bindings is not None:  # refuse a taken client or key before registering anything
        taken = read_bindings(args.bindings) if Path(args.bindings).exists() else []
        for b in taken:
            if b.node_config == node_config or b.public_key == key_text:
                what = "this client" if b.node_config == node_config else "this key"
                raise ValueError(f"{args.bindings}: {what} is already bound ({b.node_config} -> node {b.node_id})")
    home = Path(args.home)
    write_connection(home, args.superlink, args.root_certificates)
    try:
        node_id = register_node(public_key, flower_env(home))
    except FlowerRunError as exc:
        print(f"fissionvae: error: {exc}", file=sys.stderr)
        return 1
    if args.bindings is not None:
        add_binding(args.bindings, NodeBinding(node_config, node_id, key_text))
        print(f"registered {public_key} as node {node_id}, bound to {node_config} in {args.bindings}")
    else:
        print(f"registered {public_key} as node {node_id} (not bound to a client: give --bindings FILE)")
    return 0


def register(subparsers) -> None:
    """Add the ``flower`` command group to the main parser's subparsers."""
    p = subparsers.add_parser(
        "flower", help="Flower deployment helpers: superlink, supernode, certs, keys, register (see docs/flower.md)"
    )
    sub = p.add_subparsers(dest="flower_cmd", required=True)

    s = sub.add_parser("superlink", help="start a Flower SuperLink (foreground; Ctrl-C stops it)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default 127.0.0.1)")
    s.add_argument(
        "--port",
        type=int,
        default=8000,
        help="the SuperNodes' port: Fleet API only, through the gate (default 8000)",
    )
    s.add_argument(
        "--control-port",
        type=int,
        default=8001,
        help="loopback port of the SuperLink itself: its control API (`train`, `register`) and the ServerApp's "
        "runtime API, reachable on this machine only (default 8001)",
    )
    s.add_argument("--home", help="FLWR_HOME of the SuperLink (default ./flower-home/superlink)")
    s.add_argument(
        "--in-memory",
        action="store_true",
        help="keep state in memory (default: <home>/superlink.db, so registered node keys survive restarts)",
    )
    s.add_argument("--insecure", action="store_true", help="plain HTTP (loopback or trusted networks only)")
    s.add_argument(
        "--certs", type=Path, help="folder with ca.crt, server.pem, server.key (from `fissionvae flower certs`)"
    )
    s.add_argument(
        "--ssl-ca-certfile", type=Path, help="CA certificate (PEM), instead of --certs; needs the two options below"
    )
    s.add_argument("--ssl-certfile", type=Path, help="the SuperLink's certificate (PEM), signed by --ssl-ca-certfile")
    s.add_argument("--ssl-keyfile", type=Path, help="the SuperLink's private key (PEM) for --ssl-certfile")
    s.add_argument(
        "--node-auth",
        action="store_true",
        help="only SuperNodes whose public key was registered (`fissionvae flower register`) may join",
    )
    s.add_argument(
        "--simulation", action="store_true", help="simulation runtime (what --engine flower-sim starts itself)"
    )
    s.set_defaults(func=cmd_superlink)

    n = sub.add_parser("supernode", help="start a Flower SuperNode serving one logical client (foreground)")
    n.add_argument(
        "--superlink",
        required=True,
        metavar="HOST:PORT",
        help="the SuperLink's Fleet API address, as the nodes reach it (its --port, default 8000)",
    )
    _add_client_options(n)
    n.add_argument(
        "--data-dir",
        type=Path,
        help="folder with this machine's <dataset>/ IDX files (default: the run config's data.dir / the cache)",
    )
    n.add_argument("--root-certificates", type=Path, metavar="CA_PEM", help="CA certificate of a TLS SuperLink")
    n.add_argument("--insecure", action="store_true", help="plain HTTP SuperLink")
    n.add_argument(
        "--auth-key",
        type=Path,
        metavar="PRIVATE_KEY",
        help="private key registered with the SuperLink (node authentication)",
    )
    n.add_argument(
        "--port",
        type=int,
        default=9094,
        help="local port of the node's ClientApp runtime API (distinct per node on one machine; default 9094)",
    )
    n.add_argument("--home", help="FLWR_HOME of the SuperNode (default ./flower-home/supernode-<group>-<partition>)")
    n.add_argument(
        "--max-retries", type=int, help="give up after this many failed connection attempts (default: retry forever)"
    )
    n.set_defaults(func=cmd_supernode)

    c = sub.add_parser("certs", help="write a self-signed CA and a SuperLink certificate (for trying TLS)")
    c.add_argument(
        "--out", type=Path, required=True, help="folder to write ca.crt, ca.key, server.pem and server.key into"
    )
    c.add_argument(
        "--host",
        action="append",
        help="host name or IP address the SuperNodes use to reach the SuperLink (repeatable; 127.0.0.1 and localhost, "
        "which the Fleet API gate uses, are always added)",
    )
    c.add_argument("--days", type=int, default=365, help="validity of the certificates in days (default 365)")
    c.set_defaults(func=cmd_certs)

    k = sub.add_parser("keys", help="write a SuperNode key pair (ECDSA P-384, OpenSSH format) for node authentication")
    k.add_argument("--out", type=Path, required=True, help="folder to write the key pair into")
    k.add_argument(
        "--name",
        default="supernode",
        help="file name of the private key; the public key is <name>.pub (default supernode)",
    )
    k.set_defaults(func=cmd_keys)

    r = sub.add_parser(
        "register",
        help="on the SuperLink's machine: register a SuperNode public key (--node-auth) and bind it to its client",
    )
    r.add_argument("public_key", type=Path, help="the node's public key (`fissionvae flower keys`)")
    r.add_argument(
        "--superlink",
        required=True,
        metavar="HOST:PORT",
        help="the SuperLink's control address on this machine (127.0.0.1:--control-port, default 127.0.0.1:8001)",
    )
    _add_client_options(r)
    r.add_argument(
        "--bindings",
        type=Path,
        metavar="FILE",
        help="node-bindings file to record client -> node in (give it to `train --node-bindings`)",
    )
    r.add_argument("--root-certificates", type=Path, metavar="CA_PEM", help="CA certificate of a TLS SuperLink")
    r.add_argument("--insecure", action="store_true", help="plain HTTP SuperLink")
    r.add_argument(
        "--home", default=str(DEFAULT_HOME / "cli"), help="FLWR_HOME for the flwr client (default ./flower-home/cli)"
    )
    r.set_defaults(func=cmd_register)
