"""The SuperLink's public address: a TLS front that forwards Flower's Fleet API and nothing else.

Flower 1.42 serves three APIs on one port: the Fleet API (``/v1/fleet/*``, what SuperNodes
use), the control API (``/v1/control/*``: ``flwr run``, ``flwr stop``, ``flwr supernode
register``) and the ServerApp's runtime API (``/v1/runtime/*``). Its open-source build does not
authenticate the control API (account authentication is an OIDC plugin that this distribution
does not ship; ``--control-api-address`` is deprecated and only used by an internal gRPC
fallback). So anyone who can reach that port and holds the public ``ca.crt`` could register
a node key or start a run.

``fissionvae flower superlink`` therefore binds the SuperLink to loopback and starts this gate
on the public address. The gate terminates TLS with the SuperLink's certificate, forwards
``POST /v1/fleet/<name>`` and ``GET /health`` to the loopback SuperLink (over TLS, verified
with the CA), and answers every other request with 403. Operator rights are thus a shell on
the SuperLink's machine: only there can ``flwr`` reach the control API. SuperNodes still
authenticate with their registered keys (``--enable-supernode-auth``): the gate passes their
signed requests through unchanged.

Run it as ``python -m fissionvae.federation.flower.gate --listen HOST:PORT --upstream
127.0.0.1:PORT [--certfile F --keyfile F --cafile F]`` (the wrappers do).
"""

from __future__ import annotations

import argparse
import http.client
import re
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Paths served on the public address: the Fleet API's endpoints and the health check.
FLEET_PATH = re.compile(r"/v1/fleet/[a-z0-9-]+")
HEALTH_PATH = "/health"
#: Largest request body forwarded (a message carries a model's weights).
MAX_BODY = 1 << 30
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
REFUSED = b'{"detail": "not served on this address: the control and runtime APIs are on the SuperLink\'s loopback"}'


def allowed(method: str, target: str) -> bool:
    """True for the requests the gate forwards: ``POST /v1/fleet/<name>`` and ``GET /health``."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.query or parts.fragment:
        return False
    if method == "POST":
        return FLEET_PATH.fullmatch(parts.path) is not None
    return method == "GET" and parts.path == HEALTH_PATH


class FleetGateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FleetGate

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for key, value in headers or [("Content-Type", "application/json")]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        if not allowed(self.command, self.path):
            self.close_connection = True
            self._reply(403, REFUSED)
            return
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._reply(411, b'{"detail": "Content-Length required"}')
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._reply(413, b'{"detail": "bad Content-Length"}')
            return
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            status, reply_headers, data = self.server.forward(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            self._reply(502, f'{{"detail": "SuperLink unreachable: {type(exc).__name__}"}}'.encode())
            return
        self._reply(status, data, [(k, v) for k, v in reply_headers if k.lower() not in HOP_BY_HOP])


class FleetGate(ThreadingHTTPServer):
    """Forwards the Fleet API from ``listen`` to the SuperLink at ``upstream`` (one thread per connection)."""

    daemon_threads = True

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        server_context: ssl.SSLContext | None,
        upstream_context: ssl.SSLContext | None,
        timeout: float = 300.0,
        verbose: bool = False,
    ):
        super().__init__(listen, FleetGateHandler)
        self.upstream = upstream
        self.server_context = server_context
        self.upstream_context = upstream_context
        self.upstream_timeout = timeout
        self.verbose = verbose

    def finish_request(self, request, client_address) -> None:
        """TLS handshake in the connection's own thread (a slow client cannot block the others)."""
        if self.server_context is not None:
            request.settimeout(30)
            try:
                request = self.server_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return  # not TLS, or a failed handshake: nothing is forwarded
            request.settimeout(None)
        super().finish_request(request, client_address)

    def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.upstream
        conn: http.client.HTTPConnection
        if self.upstream_context is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=self.upstream_timeout, context=self.upstream_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.upstream_timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            return res.status, res.getheaders(), res.read()
        finally:
            conn.close()


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Forward Flower's Fleet API (only) to a loopback SuperLink.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="public address of the SuperLink")
    p.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the SuperLink on loopback")
    p.add_argument("--certfile", help="server certificate (TLS on the public address)")
    p.add_argument("--keyfile", help="its private key")
    p.add_argument("--cafile", help="CA certificate that verifies the SuperLink (TLS upstream)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    listen, upstream = parse_address(args.listen), parse_address(args.upstream)
    if upstream[0] not in ("127.0.0.1", "localhost", "::1"):
        p.error(f"--upstream {args.upstream}: the SuperLink behind the gate must listen on loopback")
    server_context = upstream_context = None
    if args.certfile or args.keyfile or args.cafile:
        if not (args.certfile and args.keyfile and args.cafile):
            p.error("TLS needs --certfile, --keyfile and --cafile")
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(args.certfile, args.keyfile)
        upstream_context = ssl.create_default_context(cafile=args.cafile)
    gate = FleetGate(listen, upstream, server_context, upstream_context, verbose=args.verbose)
    print(
        f"Fleet API gate on {args.listen} -> SuperLink {args.upstream} (control and runtime APIs refused)", flush=True
    )
    try:
        gate.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gate.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
