"""Commands of the cluster: domains, servers and administrators."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import (
    PAGING,
    boolean,
    page_of,
    required_string,
)
from crdtmds.core import names
from crdtmds.core.cluster import SUPERUSER, public_administrator
from crdtmds.errors import InvalidParameter
from crdtmds.sync.protocol import document_url

log = logging.getLogger("crdtmds.api")


def domain_reply(call: Call, entry: Mapping[str, Any]) -> dict[str, Any]:
    document_id = entry.get("document-id", "")
    domain = call.services.documents.domains.get(document_id)
    return {
        "uid": entry.get("uid"),
        "name": entry.get("name"),
        "type": "domain",
        "document-id": document_id,
        "url": document_url(document_id),
        "created-at": entry.get("created-at"),
        "created-by": entry.get("created-by"),
        "available": domain is not None and domain.is_domain_document(),
    }


async def _show_domains(call: Call) -> dict[str, Any]:
    cluster = call.cluster
    visible = [
        entry
        for name, entry in sorted(cluster.domains().items())
        if cluster.permission(call.login.admin, name) is not None
    ]
    page, bounds = page_of(visible, call.params)
    return {"objects": [domain_reply(call, e) for e in page], **bounds}


async def _add_domain(call: Call) -> dict[str, Any]:
    name = names.check_name(call.params.get("name"), "name")
    entry = await call.services.cluster_admin.create_domain(name, created_by=call.login.admin)
    log.info("%r added domain %r", call.login.admin, name)
    return domain_reply(call, entry)


async def _show_servers(call: Call) -> dict[str, Any]:
    servers = [
        {**entry, "type": "server", "this-server": name == call.services.config.name}
        for name, entry in sorted(call.cluster.servers().items())
    ]
    page, bounds = page_of(servers, call.params)
    return {"objects": page, **bounds}


async def _delete_server(call: Call) -> dict[str, Any]:
    """Remove a server from the cluster: the others stop dialing and refuse it, and
    status stops waiting for it. Not the server this request came to."""
    name = required_string(call.params, "name")
    tombstone = await call.services.cluster_admin.remove_server(name, removed_by=call.login.admin)
    log.warning("%r removed server %r (id %r)", call.login.admin, name, tombstone["server-id"])
    return {"message": "OK", "removed": tombstone}


async def _add_administrator(call: Call) -> dict[str, Any]:
    name = names.check_name(call.params.get("name"), "name")
    password = required_string(call.params, "password")
    superuser = boolean(call.params, "superuser")
    grants = call.params.get("domains", {})
    if not isinstance(grants, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in grants.items()
    ):
        raise InvalidParameter(
            "'domains' must map domain names to read-only or read-write",
            details={"parameter": "domains"},
        )
    entry = await call.services.cluster_admin.add_administrator(
        name, password, superuser=superuser, domains=grants
    )
    log.info("%r added administrator %r", call.login.admin, name)
    return {**public_administrator(entry), "type": "administrator"}


async def _show_administrators(call: Call) -> dict[str, Any]:
    admins = call.cluster.administrators()
    if call.cluster.permission(call.login.admin, None) != SUPERUSER:
        admins = {k: v for k, v in admins.items() if k == call.login.admin}
    records = [
        {
            **public_administrator(entry),
            "locked": bool(entry.get("locked")),
            "type": "administrator",
        }
        for _, entry in sorted(admins.items())
    ]
    page, bounds = page_of(records, call.params)
    return {"objects": page, **bounds}


COMMANDS: dict[str, Command] = {
    "show-domains": command(_show_domains, Access.LOGGED_IN, "", PAGING),
    "add-domain": command(_add_domain, Access.SUPERUSER, "name"),
    "show-servers": command(_show_servers, Access.LOGGED_IN, "", PAGING),
    "delete-server": command(_delete_server, Access.SUPERUSER, "name"),
    "add-administrator": command(
        _add_administrator, Access.SUPERUSER, "name password superuser domains"
    ),
    "show-administrators": command(_show_administrators, Access.LOGGED_IN, "", PAGING),
}
