"""Real servers with the HTTPS Web API door, and a small HTTPS client for them (stdlib
`http.client` and raw sockets, so that the tests see exactly what is on the wire)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crdtmds.status_query import query_status
from crdtmds.testing.localcluster import LocalServer, cli_command

ADMIN = "admin"
PASSWORD = "web-api-password"
CLI_TIMEOUT = 60.0
WAIT = 10.0
"""Seconds any one socket operation of a test may take."""


def run_cli(*args: str) -> str:
    result = subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"crdtmds {args[0]} failed:\n{result.stderr}"
    return result.stdout


def init_server(root: Path, name: str, start_args: list[str]) -> tuple[LocalServer, str]:
    """A new cluster's Primary with a Web API on a free port; returns it (not started)
    and the cluster secret."""
    server = LocalServer(name, root / name, start_args=start_args)
    output = run_cli(
        "init", "--data", str(server.data_dir), "--name", name, "--listen", "127.0.0.1:0",
        "--admin", ADMIN, "--password", PASSWORD, "--web-api", "127.0.0.1:0", "--json",
    )  # fmt: skip
    return server, json.loads(output)["secret"]


def join_server(root: Path, name: str, peer: str, secret: str) -> LocalServer:
    server = LocalServer(name, root / name)
    run_cli(
        "join", "--data", str(server.data_dir), "--name", name, "--listen", "127.0.0.1:0",
        "--peer", peer, "--secret", secret, "--web-api", "127.0.0.1:0", "--timeout", "30",
    )  # fmt: skip
    return server


def status_of(server: LocalServer) -> dict[str, Any]:
    return asyncio.run(query_status(server.url, timeout=WAIT, credentials=(ADMIN, PASSWORD)))


def web_api_of(server: LocalServer) -> dict[str, str]:
    web = status_of(server)["web-api"]
    assert isinstance(web, dict), "the server reports no Web API"
    return web


def domain_heads(server: LocalServer, domain: str) -> list[str]:
    return status_of(server)["domains"][domain]["heads"]


def unverified() -> ssl.SSLContext:
    """What the stock clients do by default: no CA or host name check."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Reply:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict), f"not a JSON object: {self.body[:200]!r}"
        return data


class WebApi:
    """One keep-alive HTTPS connection to a server's Web API."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.connection = http.client.HTTPSConnection(
            self.host, self.port, context=unverified(), timeout=WAIT
        )

    def close(self) -> None:
        self.connection.close()

    def post(
        self,
        path: str,
        body: bytes | str | dict[str, Any] | list[Any] = b"{}",
        *,
        sid: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if sid is not None:
            sent["X-chkp-sid"] = sid
        self.connection.request("POST", path, body=body, headers=sent)
        response = self.connection.getresponse()
        return Reply(response.status, response.reason, response.headers, response.read())

    def call(self, command: str, params: dict[str, Any] | None = None, **kw: Any) -> Reply:
        return self.post(f"/web_api/{command}", params if params is not None else {}, **kw)

    def ok(self, command: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        reply = self.call(command, params, **kw)
        assert (reply.status, reply.reason) == (200, "OK"), reply.body
        return reply.data

    def login(self, domain: str | None = None, **extra: Any) -> str:
        params: dict[str, Any] = {"user": ADMIN, "password": PASSWORD, **extra}
        if domain is not None:
            params["domain"] = domain
        return str(self.ok("login", params)["sid"])


def served_certificate(url: str) -> bytes:
    """The DER certificate a bare TLS handshake sees (what the Python SDK pins)."""
    with tls_socket(url) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def sha1_hex(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


def tls_socket(url: str) -> ssl.SSLSocket:
    parts = urlsplit(url)
    raw = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
    return unverified().wrap_socket(raw, server_hostname=parts.hostname)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk
