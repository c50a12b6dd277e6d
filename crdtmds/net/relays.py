"""When a server passes on changes it got from one peer to the others.

In a full mesh (every server dials every server) with all of this server's links up, the
others are linked to each other too, as far as we can tell: changes reach them from their
origin, so relays wait `relay_delay` and go coalesced. Without the mesh this server may be
the others' only way, and relays go at once.
"""

from __future__ import annotations

import asyncio

from crdtmds.app.documents import Documents
from crdtmds.net.links import Links
from crdtmds.sync.gossip import Gossip


class Relays:
    """The relay timer of one server."""

    def __init__(
        self, hub: Gossip, links: Links, documents: Documents, server_name: str, delay: float
    ) -> None:
        self.hub = hub
        self.links = links
        self.documents = documents
        self.server_name = server_name
        self.delay = delay
        self.mesh = True
        """Whether this server dials every server of the cluster (set when it starts)."""
        self._timer: asyncio.TimerHandle | None = None

    def can_wait(self) -> bool:
        """Whether relays of what just arrived may wait (see the module docstring)."""
        if not self.mesh:
            return False
        others = set(self.documents.cluster.servers()) - {self.server_name}
        return others <= set(self.links.connected_peers())

    def schedule(self) -> None:
        """Release pending relays after the delay, unless a release is already due."""
        if self._timer is None and self.hub.relays_pending():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.delay, self._release)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        self._timer = None
        self.hub.release_relays()
        self.links.wake_all()
