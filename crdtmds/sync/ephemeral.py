"""Forwarding of ephemeral messages (presence, cursors) between the connections of
`crdtmds.sync.gossip.Gossip`: each message goes on once to every other peer that follows
its document, and never back around a mesh loop. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from crdtmds.sync.connection import Connection, ConnectionState
from crdtmds.sync.protocol import Ephemeral, encode

EPHEMERAL_MEMORY = 4096
"""How many ephemeral message ids are remembered to stop them circling a mesh."""


class EphemeralRelay:
    """The ids of the ephemeral messages seen lately, and their forwarding."""

    def __init__(self, local_peer_id: str, memory: int = EPHEMERAL_MEMORY) -> None:
        self._local_peer_id = local_peer_id
        self._memory = memory
        self._seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()

    def forward(
        self, message: Ephemeral, origin: Connection, connections: Iterable[Connection]
    ) -> None:
        """Queue `message`, received on `origin`, on every other connected connection
        that syncs its document, unless it is ours or was seen before."""
        if message.sender_id == self._local_peer_id or not self._first_sight(message):
            return  # our own, come back around a loop, or seen before
        for other in connections:
            if (
                other is not origin
                and other.state is ConnectionState.CONNECTED
                and other.should_sync(message.document_id)
            ):
                forwarded = Ephemeral(
                    sender_id=message.sender_id,
                    target_id=other.peer_info.peer_id,
                    document_id=message.document_id,
                    count=message.count,
                    session_id=message.session_id,
                    data=message.data,
                )
                other.outbox.append(encode(forwarded))

    def _first_sight(self, message: Ephemeral) -> bool:
        key = (message.sender_id, message.session_id, message.count)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return True
