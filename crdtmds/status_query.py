"""A cluster's status, as any program may ask for it: `show-status` of one server over
`/api` (unauthenticated), and every server's answer gathered into one report of which
servers are reachable and whether every document has converged.

`crdtmds status`, the benchmarks and the cluster tests use it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crdtmds.errors import ClusterError, CrdtmdsError
from crdtmds.tls import client_ssl_context

STATUS_TIMEOUT = 5.0


async def collect_status(
    server: str, *, timeout: float = STATUS_TIMEOUT, tls_ca: str | None = None
) -> dict[str, Any]:
    """Ask `server` for the server list, then every server for its own status.

    Returns `servers` (name, url, region, role, reachable, peers), `domains` (per domain:
    document id, each server's heads, converged), `cluster-document` (likewise) and
    `converged`: every server reachable and identical heads everywhere.
    """
    first = await query_status(server, timeout=timeout, tls_ca=tls_ca)
    listed = {entry["name"]: entry for entry in first.get("servers", []) if entry.get("name")}
    listed.setdefault(first["name"], {"name": first["name"], "url": first.get("url", "")})
    names = sorted(listed)

    async def status_of(name: str) -> dict[str, Any] | str:
        if name == first["name"]:
            return first
        url = listed[name].get("url") or ""
        if not url:
            return "no URL registered yet"
        try:
            return await query_status(url, timeout=timeout, tls_ca=tls_ca)
        except CrdtmdsError as exc:
            return exc.message

    answers = dict(zip(names, await asyncio.gather(*(status_of(n) for n in names)), strict=True))
    return _status_report(listed, answers)


def _status_report(
    listed: dict[str, dict[str, Any]], answers: dict[str, dict[str, Any] | str]
) -> dict[str, Any]:
    servers = []
    reachable: dict[str, dict[str, Any]] = {}
    for name, answer in answers.items():
        entry = listed[name]
        row = {
            "name": name,
            "url": entry.get("url", ""),
            "region": entry.get("region"),
            "role": entry.get("role"),
            "reachable": isinstance(answer, dict),
            "peers": [],
            "web-api": None,
        }
        if isinstance(answer, dict):
            reachable[name] = answer
            row.update(
                url=answer.get("url", row["url"]),
                region=answer.get("region"),
                role=answer.get("role"),
                peers=answer.get("peers", []),
            )
            row["web-api"] = answer.get("web-api")
        else:
            row["error"] = answer
        servers.append(row)
    domain_names = sorted({d for status in reachable.values() for d in status.get("domains", {})})
    domains = {name: _heads_by_server(reachable, name) for name in domain_names}
    cluster_document = _heads_by_server(reachable, None)
    converged = (
        len(reachable) == len(answers)
        and cluster_document["converged"]
        and all(d["converged"] for d in domains.values())
    )
    return {
        "servers": servers,
        "domains": domains,
        "cluster-document": cluster_document,
        "converged": converged,
    }


def _heads_by_server(statuses: dict[str, dict[str, Any]], domain: str | None) -> dict[str, Any]:
    """One domain's (or, for None, the cluster document's) heads on every server."""
    heads: dict[str, list[str] | None] = {}
    document_id = None
    for name, status in statuses.items():
        entry = (
            status.get("cluster-document")
            if domain is None
            else status.get("domains", {}).get(domain)
        )
        heads[name] = entry.get("heads") if entry else None
        document_id = document_id or (entry or {}).get("document-id")
    distinct = {tuple(h) for h in heads.values() if h is not None}
    converged = None not in heads.values() and len(distinct) == 1 and () not in distinct
    return {"document-id": document_id, "heads": heads, "converged": converged}


async def query_status(
    server: str, *, timeout: float = STATUS_TIMEOUT, tls_ca: str | None = None
) -> dict[str, Any]:
    """One server's own status: the unauthenticated `show-status` command over /api."""
    request = json.dumps({"id": 1, "command": "show-status", "params": {}})
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                _api_url(server),
                ssl=client_ssl_context(tls_ca) if server.startswith("wss:") else None,
                proxy=None,
                open_timeout=timeout,
            ) as ws:
                await ws.send(request)
                text = await ws.recv()
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
        raise ClusterError(f"cannot reach {server}: {exc or type(exc).__name__}") from exc
    return _reply_data(server, text)


def _reply_data(server: str, text: str | bytes) -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError as exc:
        raise ClusterError(f"{server} sent a malformed reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise ClusterError(f"{server} sent a malformed reply")
    error = reply.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise ClusterError(f"{server} refused show-status: {message}")
    for key in ("result", "data"):
        if isinstance(reply.get(key), dict):
            return reply[key]
    if "name" in reply:
        return reply
    raise ClusterError(f"{server} sent a reply without a status")


def _api_url(server: str) -> str:
    parts = urlsplit(server.strip())
    path = parts.path.rstrip("/")
    if path.endswith(("/sync", "/api")):
        path = path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path + "/api", "", ""))
