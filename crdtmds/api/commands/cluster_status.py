"""`show-cluster-status`: every server of the cluster as this one sees it, for the
console's cluster page: region, role, reachable, when last heard, and per domain the
administrator may read, whether every server holds the same heads or how far behind
each is.

This server asks the others for their `show-status` with a status token of the login
(the query `crdtmds status` makes), with a short timeout, so that an unreachable server
costs at most that.
"""

from __future__ import annotations

from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import integer
from crdtmds.status_query import gather_status

QUERY_TIMEOUT = 2.0
"""Seconds each other server has to answer, by default."""


async def _show_cluster_status(call: Call) -> dict[str, Any]:
    status = call.services.status
    timeout = integer(call.params, "timeout", int(QUERY_TIMEOUT * 1000), 100, 10_000) / 1000
    own = {**status.local_status(), "status-token": status.issue_token(call.login.admin)}
    report = await gather_status(
        own, own["status-token"], timeout=timeout, tls_ca=call.services.config.tls_cert
    )
    here = call.services.config.name
    status.note_heard(s["name"] for s in report["servers"] if s["reachable"] and s["name"] != here)
    for server in report["servers"]:
        server["this-server"] = server["name"] == here
        server["last-heard"] = None if server["this-server"] else status.heard.get(server["name"])
    readable = {
        name: entry
        for name, entry in report["domains"].items()
        if call.cluster.permission(call.login.admin, name) is not None
    }
    everyone = all(server["reachable"] for server in report["servers"])
    for entry in readable.values():
        entry["converged"] = entry["converged"] and everyone
        entry["changes-behind"] = {
            name: None if heads is None else status.changes_missing(entry["document-id"], heads)
            for name, heads in entry["heads"].items()
        }
    report["domains"] = readable
    report.pop("cluster-document", None)
    report["server"] = here
    return report


COMMANDS: dict[str, Command] = {
    "show-cluster-status": command(_show_cluster_status, Access.LOGGED_IN, "timeout"),
}
