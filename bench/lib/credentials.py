"""Who the benchmarks are to the servers: the bench administrator, or a server of the
cluster (proving knowledge of its secret)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

BENCH_ADMIN = "admin"
BENCH_PASSWORD = "bench-password"


def admin_login_query() -> str:
    """The `/sync` query string that logs in as the bench administrator."""
    return urlencode({"user": BENCH_ADMIN, "password": BENCH_PASSWORD})


def server_join_metadata(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Join metadata proving knowledge of a cluster's secret, as a server dialing it."""
    from crdtmds.core.auth import ServerCredentials
    from crdtmds.net.admission import METADATA_KEY

    creds = ServerCredentials.create(config["secret"], config["cluster_id"], name)
    identity = {
        "cluster": config["cluster_id"],
        "server": name,
        "name": name,
        "region": "bench",
        "role": "secondary",
        "url": "",
        "cluster-document": config["cluster_document_id"],
    }
    return {"isEphemeral": False, METADATA_KEY: {**identity, **creds.to_metadata()}}
