"""Making a server: `init_cluster` creates a cluster with this server as its Primary;
`join_cluster` makes a Secondary (introduce it to a member with the cluster secret, then
fetch the cluster document and every domain, and register)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crdtmds.config import CONFIG_KEY, DATABASE_FILE, ServerConfig, new_server_id
from crdtmds.core import auth
from crdtmds.core.cluster import ROLE_PRIMARY, ROLE_SECONDARY, ClusterDocument
from crdtmds.core.docdata import change_rows
from crdtmds.errors import AuthenticationFailed, ClusterError
from crdtmds.net.admission import METADATA_KEY, check_listener_proof
from crdtmds.net.catchup import JOIN_TIMEOUT
from crdtmds.net.mesh import OPEN_TIMEOUT
from crdtmds.net.urls import SYNC_PATH, advertised_url_for, endpoint, normalise_url
from crdtmds.server import Server, web_api_tls_files
from crdtmds.storage import Storage
from crdtmds.sync.protocol import Error, Join, Peer, decode, encode, new_document_id
from crdtmds.tls import client_ssl_context


async def init_cluster(
    data_dir: str | Path,
    *,
    name: str,
    listen_host: str,
    listen_port: int,
    url: str,
    region: str,
    admin: str,
    password: str,
    min_password_length: int = auth.MIN_PASSWORD_LENGTH,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    web_api: tuple[str, int] | None = None,
) -> ServerConfig:
    """Create a cluster: its document, secret, this Primary server and a superuser.

    `web_api` (host, port) opens the HTTPS Web API door there at every start."""
    auth.check_new_password(admin, password, min_length=min_password_length)
    cluster_id = new_document_id()
    config = ServerConfig(
        name=name,
        cluster_id=cluster_id,
        cluster_document_id=new_document_id(),
        secret=auth.new_secret(cluster_id),
        listen_host=listen_host,
        listen_port=listen_port,
        url=url,
        region=region,
        role=ROLE_PRIMARY,
        tls_cert=tls_cert,
        tls_key=tls_key,
        server_id=new_server_id(),
        **_web_api_fields(web_api),
    )
    cluster = ClusterDocument.create(config.cluster_id, config.cluster_document_id)
    cluster.add_server(name, url, region, ROLE_PRIMARY, config.server_id)
    cluster.add_administrator(admin, auth.hash_password(password), superuser=True)
    await _create_data_dir(Path(data_dir), config, change_rows(cluster.doc))
    return config


async def join_cluster(
    data_dir: str | Path,
    *,
    name: str,
    listen_host: str,
    listen_port: int,
    region: str,
    peer: str,
    secret: str,
    url: str = "",
    tls_cert: str | None = None,
    tls_key: str | None = None,
    timeout: float = JOIN_TIMEOUT,
    web_api: tuple[str, int] | None = None,
    replace: bool = False,
) -> ServerConfig:
    """Make a Secondary: prove the secret to `peer`, learn the cluster document id from
    its answer, then fetch the cluster document and every domain and register.

    With `replace`, a server already listed under `name` (one that lost its data) is
    replaced: its old identity is tombstoned and this new one listed in its place.

    Raises AuthenticationFailed when the peer refuses the secret (nothing is written),
    ClusterError when the peer cannot be reached or the fetch times out (what was written
    is removed, so the join can be retried).
    """
    path = Path(data_dir)
    if (path / DATABASE_FILE).exists():
        raise ClusterError(f"{path} already holds a crdtmds server")
    cluster_id = auth.cluster_id_of_secret(secret)
    peer = normalise_url(peer)
    meta = await asyncio.wait_for(
        introduce(peer, secret, cluster_id, name, client_ssl_context(tls_cert)), timeout
    )
    config = ServerConfig(
        name=name,
        cluster_id=cluster_id,
        cluster_document_id=str(meta["cluster-document"]),
        secret=secret,
        listen_host=listen_host,
        listen_port=listen_port,
        url=url or advertised_url_for(listen_host, listen_port, tls=bool(tls_cert)),
        region=region,
        role=ROLE_SECONDARY,
        tls_cert=tls_cert,
        tls_key=tls_key,
        peers=[peer],
        server_id=new_server_id(),
        **_web_api_fields(web_api),
    )
    await _create_data_dir(path, config, [])
    try:
        server = await Server.open(path)
        try:
            await server.fetch_from_peers(timeout, replace=replace)
        finally:
            await server.stop()
    except BaseException:
        _remove_database(path)
        raise
    return config


async def introduce(
    peer: str,
    secret: str,
    cluster_id: str,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Dial `peer` once with our proof of the secret; return its verified metadata."""
    creds = auth.ServerCredentials.create(secret, cluster_id, name)
    join = Join(
        sender_id=f"crdtmds-{name}-join-{secrets.token_hex(4)}",
        peer_metadata={
            "isEphemeral": False,
            METADATA_KEY: {**creds.to_metadata(), "name": name, "role": ROLE_SECONDARY},
        },
    )
    try:
        async with connect(
            endpoint(peer, SYNC_PATH),
            ssl=ssl_context if peer.startswith("wss:") else None,
            compression=None,
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
        ) as ws:
            await ws.send(encode(join))
            frame = await ws.recv()
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise ClusterError(f"cannot reach {peer}: {exc}") from exc
    except ConnectionClosed as exc:
        raise ClusterError(f"{peer} closed the connection: {exc}") from exc
    if isinstance(frame, str):
        raise ClusterError(f"{peer} does not speak the automerge-repo protocol")
    message = decode(frame)
    if isinstance(message, Error):
        raise AuthenticationFailed(f"{peer} refused '{name}': {message.message}")
    if not isinstance(message, Peer):
        raise ClusterError(f"{peer} answered the join with an unexpected message")
    meta = check_listener_proof(message, secret, cluster_id, creds.nonce)
    if not isinstance(meta.get("cluster-document"), str) or not meta["cluster-document"]:
        raise ClusterError(f"{peer} did not name its cluster document")
    return meta


async def _create_data_dir(
    path: Path, config: ServerConfig, cluster_changes: list[tuple[bytes, bytes]]
) -> None:
    """A new server's data directory: its configuration and what it knows of the cluster."""
    if (path / DATABASE_FILE).exists():
        raise ClusterError(f"{path} already holds a crdtmds server")
    storage = await Storage.open(path / DATABASE_FILE)
    try:
        if cluster_changes:
            await storage.append_changes(config.cluster_document_id, cluster_changes)
        await storage.set_meta(CONFIG_KEY, config.to_meta())
    finally:
        await storage.close()
    web_api_tls_files(config, path)


def _web_api_fields(web_api: tuple[str, int] | None) -> dict[str, Any]:
    if web_api is None:
        return {}
    host, port = web_api
    return {"web_api_host": host, "web_api_port": port}


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            (path / (DATABASE_FILE + suffix)).unlink()
