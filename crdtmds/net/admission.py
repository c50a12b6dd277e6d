"""Who may sync with this server, decided at the automerge-repo handshake.

Servers prove knowledge of the cluster secret with an HMAC over a fresh nonce, carried in
the join's peer metadata under ``crdtmds``; the listener answers with its own proof over
the dialer's nonce. A join without that metadata is an administrator's automerge-repo
client, authenticated by the credentials in the URL query; it may read the domains its
administrator may read and write nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from crdtmds.app.documents import Documents
from crdtmds.app.logins import Logins
from crdtmds.config import ServerConfig
from crdtmds.core import auth
from crdtmds.errors import AuthenticationFailed
from crdtmds.net.links import SyncLink
from crdtmds.net.urls import format_address
from crdtmds.sync.heads_summary import CAPABILITY
from crdtmds.sync.peers import PeerInfo
from crdtmds.sync.protocol import Join, Peer

METADATA_KEY = "crdtmds"
"""The key of crdtmds' own facts inside automerge-repo peer metadata."""

Admitted = tuple[PeerInfo, dict[str, Any]]
"""What the hub is told of an admitted peer, and the metadata of our `peer` reply."""


class Admission:
    """The checks of both ends of a handshake, for one server."""

    def __init__(self, config: ServerConfig, documents: Documents, logins: Logins) -> None:
        self.config = config
        self.documents = documents
        self.logins = logins
        self._verifier = auth.NonceVerifier(config.secret, config.cluster_id)
        """One replay memory per server lifetime."""
        self._nonces: dict[str, str] = {}
        """The nonce of our credentials per link we dialed, until the listener answers."""

    def identity(self) -> dict[str, Any]:
        config = self.config
        return {
            "cluster": config.cluster_id,
            "server": config.name,
            "name": config.name,
            "region": config.region,
            "role": config.role,
            "url": config.url,
            "cluster-document": config.cluster_document_id,
            "server-id": config.server_id,
            CAPABILITY: 1,
        }

    # ------------------------------------------------------------ links we dialed

    def dialer_metadata(self, link: SyncLink) -> dict[str, Any]:
        """Our join metadata: who we are and a fresh proof of the cluster secret."""
        config = self.config
        creds = auth.ServerCredentials.create(config.secret, config.cluster_id, config.name)
        self._nonces[link.conn_id] = creds.nonce
        return {"isEphemeral": False, METADATA_KEY: {**self.identity(), **creds.to_metadata()}}

    def verify_listener(self, conn_id: str, peer: Peer) -> PeerInfo:
        """The hub's check of a listener's `peer` reply on a link we dialed."""
        nonce = self._nonces.pop(conn_id, None)
        if nonce is None:
            raise AuthenticationFailed("unknown connection")
        config = self.config
        meta = check_listener_proof(peer, config.secret, config.cluster_id, nonce)
        if meta.get("cluster-document") != config.cluster_document_id:
            raise AuthenticationFailed("the peer serves another cluster document")
        self._refuse_removed(meta)
        return PeerInfo(peer_id=peer.sender_id, metadata=meta, may_write=True, is_server=True)

    def _refuse_removed(self, meta: dict[str, Any]) -> None:
        """A server removed from the cluster (its id tombstoned) is refused both ways."""
        if self.documents.cluster.is_removed(meta.get("server-id")):
            raise AuthenticationFailed(
                f"server {str(meta.get('server'))!r} was removed from the cluster "
                f"(server id {str(meta.get('server-id'))!r})"
            )

    def is_removed_peer(self, metadata: dict[str, Any]) -> bool:
        """Whether an admitted server's metadata names an id removed since."""
        return self.documents.cluster.is_removed(metadata.get("server-id"))

    def forget(self, link: SyncLink) -> None:
        """The link is gone: its nonce, if still waiting for an answer, with it."""
        self._nonces.pop(link.conn_id, None)

    # ------------------------------------------------------------ links dialed to us

    async def admit(self, link: SyncLink, join: Join) -> Admitted:
        """Accept the peer whose join arrived on a link dialed to us (noting on the link
        which server or administrator it is), or raise `CrdtmdsError` to refuse it."""
        metadata = dict(join.peer_metadata or {})
        if METADATA_KEY in metadata:
            admitted = self._admit_server(join, metadata[METADATA_KEY])
            link.peer_name = str(admitted[0].metadata.get("server"))
            return admitted
        return await self._admit_repo_client(link, join)

    def _admit_server(self, join: Join, meta: Any) -> Admitted:
        config = self.config
        creds = auth.ServerCredentials.from_metadata(meta)
        self._verifier.verify(creds)
        cluster_document = meta.get("cluster-document")
        if cluster_document not in (None, "", config.cluster_document_id):
            raise AuthenticationFailed("the server serves another cluster document")
        if creds.server == config.name:
            raise AuthenticationFailed(f"'{config.name}' is the name of this server itself")
        self._refuse_removed(meta)
        info = PeerInfo(peer_id=join.sender_id, metadata=dict(meta), may_write=True, is_server=True)
        proof = auth.answer_proof(config.secret, config.cluster_id, config.name, creds.nonce)
        return info, {"isEphemeral": False, METADATA_KEY: {**self.identity(), "proof": proof}}

    async def _admit_repo_client(self, link: SyncLink, join: Join) -> Admitted:
        """An administrator's automerge-repo client: credentials in the URL query."""
        source = format_address(getattr(link.ws, "remote_address", None))
        admin, may_read = await self.logins.authenticate_repo_client(dict(link.query), source)
        link.admin = str(admin)
        info = PeerInfo(
            peer_id=join.sender_id,
            metadata=dict(join.peer_metadata or {}),
            may_write=False,
            may_read=self._repo_client_reader(may_read),
            is_server=False,
        )
        identity = {k: v for k, v in self.identity().items() if k in ("name", "region", "role")}
        return info, {"isEphemeral": False, METADATA_KEY: identity}

    def _repo_client_reader(self, may_read: Callable[[str], bool]) -> Callable[[str], bool]:
        """Domains only (never the cluster document, which holds password hashes), with
        the documents of their later epochs (`crdtmds.core.epochs`)."""

        def reader(document_id: str) -> bool:
            domain_id = self.documents.epochs.domain_id(document_id)
            return domain_id in self.documents.listed_domain_ids() and bool(may_read(document_id))

        return reader


def check_listener_proof(peer: Peer, secret: str, cluster_id: str, nonce: str) -> dict[str, Any]:
    """The listener's crdtmds metadata, once its proof over our nonce checks out."""
    meta = (peer.peer_metadata or {}).get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise AuthenticationFailed("the peer is not a crdtmds server")
    if meta.get("cluster") != cluster_id:
        raise AuthenticationFailed("the peer belongs to another cluster")
    expected = auth.answer_proof(secret, cluster_id, str(meta.get("server")), nonce)
    if not hmac.compare_digest(expected, str(meta.get("proof", ""))):
        raise AuthenticationFailed("the peer could not prove it knows the cluster secret")
    return dict(meta)
