"""A cluster's status, as any program may ask for it: `show-status` of one server over
`/api`, and every server's answer gathered into one report of which servers are
reachable and whether every document has converged.

Without a login a server only says that it is up. `collect_status` logs in on the first
server (a `sid` of a login there, or user and password), whose reply carries a
short-lived status token; the other servers accept that token for their details.

`crdtmds status`, the benchmarks and the cluster tests use it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crdtmds.errors import ClusterError, CrdtmdsError
from crdtmds.tls import client_ssl_context

STATUS_TIMEOUT = 5.0
TOKEN_REUSE_SECONDS = 90.0
"""How long `query_status` reuses a status token (servers accept one for 120 s)."""
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
"""The last status token per (server, user, password), and when it came."""


Credentials = tuple[str, str]
"""An administrator's user name and password."""


async def collect_status(
    server: str,
    *,
    timeout: float = STATUS_TIMEOUT,
    tls_ca: str | None = None,
    sid: str | None = None,
    credentials: Credentials | None = None,
) -> dict[str, Any]:
    """Ask `server` for the server list, then every server for its own status. `sid`
    (a login on `server`) or `credentials` are needed: without them a server says only
    that it is up, and this raises ClusterError.

    Returns `servers` (name, url, region, role, reachable, peers), `domains` (per domain:
    document id, each server's heads, converged), `cluster-document` (likewise) and
    `converged`: every server reachable and identical heads everywhere.
    """
    first = await query_status(
        server, timeout=timeout, tls_ca=tls_ca, sid=sid, credentials=credentials
    )
    if "name" not in first:
        raise ClusterError(
            f"{server} is up; the cluster's status needs a login (crdtmds login)",
            details={"status": first.get("status")},
        )
    return await gather_status(first, first.get("status-token"), timeout=timeout, tls_ca=tls_ca)


async def gather_status(
    first: dict[str, Any],
    token: Any,
    *,
    timeout: float = STATUS_TIMEOUT,
    tls_ca: str | None = None,
) -> dict[str, Any]:
    """The cluster's report from one server's full status (`first`): every other server
    it lists is asked for its own with the status `token`, all at once. The report is
    that of `collect_status`."""
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
            answer = await query_status(url, timeout=timeout, tls_ca=tls_ca, token=token)
        except CrdtmdsError as exc:
            return exc.message
        return answer if "name" in answer else "up, but refused the status token"

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
            row["domains_loaded"] = answer.get("domains_loaded")
            row["domains_total"] = answer.get("domains_total")
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
    epochs: dict[str, str | None] = {}
    """Per server, the document of the domain's newest epoch there (`app/epochs.py`)."""
    settled = True
    document_id = None
    for name, status in statuses.items():
        entry = (
            status.get("cluster-document")
            if domain is None
            else status.get("domains", {}).get(domain)
        )
        heads[name] = entry.get("heads") if entry else None
        epochs[name] = (entry or {}).get("epoch-document-id")
        settled = settled and (entry or {}).get("epochs-settled", True)
        document_id = document_id or (entry or {}).get("document-id")
    distinct = {tuple(h) for h in heads.values() if h is not None}
    converged = None not in heads.values() and len(distinct) == 1 and () not in distinct
    converged = converged and settled  # no server still starting or carrying an epoch
    row = {"document-id": document_id, "heads": heads, "converged": converged}
    if domain is not None:
        row["epoch-document-id"] = epochs
    return row


async def query_status(
    server: str,
    *,
    timeout: float = STATUS_TIMEOUT,
    tls_ca: str | None = None,
    sid: str | None = None,
    credentials: Credentials | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """One server's own status (`show-status` over /api): its whole view with `sid`,
    `credentials` (a login first, on the same connection) or a status `token`; else only
    `{"status": "up", ...}`. With `credentials`, the token of the last login on `server`
    is reused while it is fresh, so that polling does not log in (a slow hash) each time."""
    if credentials is not None and token is None:
        cached = _tokens.get((server, *credentials))
        if cached is not None and time.monotonic() - cached[1] < TOKEN_REUSE_SECONDS:
            answer = await query_status(server, timeout=timeout, tls_ca=tls_ca, token=cached[0])
            if "name" in answer:
                return {**answer, "status-token": cached[0]}  # still fresh for the others
        answer = await _query(server, timeout, tls_ca, sid, credentials, None)
        if isinstance(answer.get("status-token"), str):
            _tokens[(server, *credentials)] = (answer["status-token"], time.monotonic())
        return answer
    return await _query(server, timeout, tls_ca, sid, credentials, token)


async def _query(
    server: str,
    timeout: float,
    tls_ca: str | None,
    sid: str | None,
    credentials: Credentials | None,
    token: str | None,
) -> dict[str, Any]:
    requests = []
    if credentials is not None:
        user, password = credentials
        login = {"id": 0, "command": "login", "params": {"user": user, "password": password}}
        requests.append(json.dumps(login))
    status: dict[str, Any] = {"id": 1, "command": "show-status", "params": {}}
    if sid is not None:
        status["sid"] = sid
    if token is not None:
        status["params"]["status-token"] = token
    requests.append(json.dumps(status))
    text = await _exchange(server, requests, timeout, tls_ca)
    return _reply_data(server, text)


async def _exchange(
    server: str, requests: list[str], timeout: float, tls_ca: str | None
) -> str | bytes:
    """Send each request in turn over one /api connection; the last reply."""
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                _api_url(server),
                ssl=client_ssl_context(tls_ca) if server.startswith("wss:") else None,
                proxy=None,
                open_timeout=timeout,
            ) as ws:
                for request in requests:
                    await ws.send(request)
                    text = await ws.recv()
                    if request is not requests[-1]:
                        _reply_data(server, text, "login")
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
        raise ClusterError(f"cannot reach {server}: {exc or type(exc).__name__}") from exc
    return text


def _reply_data(server: str, text: str | bytes, command: str = "show-status") -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError as exc:
        raise ClusterError(f"{server} sent a malformed reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise ClusterError(f"{server} sent a malformed reply")
    error = reply.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise ClusterError(f"{server} refused {command}: {message}")
    for key in ("result", "data"):
        if isinstance(reply.get(key), dict):
            return reply[key]
    if "name" in reply or "status" in reply:
        return reply
    raise ClusterError(f"{server} sent a reply without a status")


def _api_url(server: str) -> str:
    parts = urlsplit(server.strip())
    path = parts.path.rstrip("/")
    if path.endswith(("/sync", "/api")):
        path = path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path + "/api", "", ""))
