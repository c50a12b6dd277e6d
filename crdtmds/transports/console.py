"""The web console: its static pages, and one live event stream, on the Web API's
HTTPS listener.

The console is a client of `POST /web_api/COMMAND` like any other (docs/console.md);
this module only serves its files (package data in `console_static/`, no build step)
and the stream of document updates its pages follow::

    GET /                     the console (index.html)
    GET /console/FILE         its modules and style sheet
    GET /console/events       server-sent events; the login in the X-chkp-sid header

The stream sends `ready` once, then `domain` when the login's domain changed (published
here or received from a peer; the data: domain name and uid, heads, origin, time),
`cluster` when the cluster document changed, a comment line every `KEEPALIVE` seconds,
and `ended` just before it closes because the login ended or expired. Watching does
not keep a login alive.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from crdtmds.app.documents import Documents
from crdtmds.app.live_events import DocumentUpdate, LiveEvents
from crdtmds.app.logins import Login, Logins

log = logging.getLogger("crdtmds.console")

STATIC_DIR = Path(__file__).with_name("console_static")
SID_HEADER = "X-chkp-sid"
KEEPALIVE = 15.0
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    # No inline script or style, nothing from elsewhere: data shown is never code.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleDoor:
    """The console's routes, for the Web API door's application."""

    def __init__(
        self,
        documents: Documents,
        logins: Logins,
        events: LiveEvents,
        *,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.documents = documents
        self.logins = logins
        self.events = events
        self.keepalive = keepalive
        """Seconds between keep-alive comments; the login is checked at least this often."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/console/events", self.stream),
            web.get("/console/{file}", self.file),
        ]

    async def index(self, request: web.Request) -> web.StreamResponse:
        return _file_reply(STATIC_DIR / "index.html")

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or path.suffix not in CONTENT_TYPES:
            raise web.HTTPNotFound(text="not a console file")
        if not path.is_file():
            raise web.HTTPNotFound(text="not a console file")
        return _file_reply(path)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for the login named by the request's `X-chkp-sid`."""
        sid = request.headers.get(SID_HEADER, "")
        login = self.logins.peek(sid)
        if login is None:
            body = {"code": "generic_err_wrong_session_id", "message": "log in again"}
            return web.json_response(body, status=401, headers=SECURITY_HEADERS)
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        mine = (login.domain or {}).get("document-id")
        cluster_id = self.documents.cluster.document_id
        epochs = self.documents.epochs  # a domain's later epochs are documents of their own
        subscription = self.events.subscribe(
            lambda doc_id: doc_id == cluster_id or epochs.domain_id(doc_id) == mine
        )
        try:
            await _send(response, "ready", {"domain": _domain_name(login)})
            while not subscription.closed:
                updates = await subscription.next(self.keepalive)
                if self.logins.peek(sid) is None:
                    await _send(response, "ended", {"message": "the login ended or expired"})
                    break
                if not updates:
                    await response.write(b": keepalive\n\n")
                for update in updates:
                    await self._send_update(response, update, cluster_id)
        except (ConnectionError, RuntimeError):
            pass  # the browser went away
        finally:
            subscription.close()
        return response

    async def _send_update(
        self, response: web.StreamResponse, update: DocumentUpdate, cluster_id: str
    ) -> None:
        if update.document_id == cluster_id:
            await _send(response, "cluster", {"origin": update.origin, "at": update.at})
            return
        doc = self.documents.document(update.document_id)
        domain_id = self.documents.epochs.domain_id(update.document_id)
        entry = next(
            (e for e in self.documents.cluster.domains().values()
             if e.get("document-id") == domain_id),
            {},
        )  # fmt: skip
        await _send(
            response,
            "domain",
            {
                "domain": entry.get("name"),
                "uid": entry.get("uid"),
                "heads": sorted(h.hex() for h in doc.get_heads()) if doc is not None else [],
                "origin": update.origin,
                "at": update.at,
            },
        )


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


def _domain_name(login: Login) -> str | None:
    return (login.domain or {}).get("name")


def _file_reply(path: Path) -> web.Response:
    return web.Response(
        body=path.read_bytes(),
        headers={**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES[path.suffix]},
    )
