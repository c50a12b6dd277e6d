"""Servers in simulated regions on one machine: a `LocalCluster` whose servers reach each
other only through delay proxies, one per direction of every link, with about 1 ms
inside a region and 20 to 150 ms one way between regions; a region can be cut off.

Every server keeps the full mesh (it dials every server of the cluster document, and
relays coalesced after `relay_delay`), but dials each other server at the URL of the
proxy in front of it (`crdtmds start --dial-url NAME=URL`). Administrators' clients,
status queries and observers reach the servers directly, as if they sat beside them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crdtmds.status_query import query_status
from crdtmds.testing.delay_proxies import DelayProxies, ProxyLink
from crdtmds.testing.localcluster import LocalCluster, LocalServer

REGIONS = ("eu-west", "eu-central", "us-east", "ap-south")
ONE_WAY_MS: Mapping[frozenset[str], float] = {
    frozenset(("eu-west", "eu-central")): 20.0,
    frozenset(("eu-west", "us-east")): 40.0,
    frozenset(("eu-central", "us-east")): 50.0,
    frozenset(("eu-central", "ap-south")): 110.0,
    frozenset(("eu-west", "ap-south")): 120.0,
    frozenset(("us-east", "ap-south")): 150.0,
}
"""One-way delay between two regions, in milliseconds."""
LOCAL_MS = 1.0
"""One-way delay between two servers of one region."""
QUIET_START_ARGS = ("--log-level", "warning")
POLL_SECONDS = 0.2
START_TIMEOUT = 180.0
"""Bound of each step of starting the servers: sixteen processes start at once."""


@dataclass(frozen=True, slots=True)
class Geography:
    """Where the servers are: `servers_per_region` in each region, and the delays."""

    regions: tuple[str, ...] = REGIONS
    servers_per_region: int = 4
    one_way_ms: Mapping[frozenset[str], float] = field(default_factory=lambda: ONE_WAY_MS)
    local_ms: float = LOCAL_MS

    @property
    def size(self) -> int:
        return len(self.regions) * self.servers_per_region

    def region_of(self, index: int) -> str:
        """The region of server `index` (regions take turns: s1 in the first, ...)."""
        return self.regions[index % len(self.regions)]

    def delay(self, a: str, b: str) -> float:
        """One-way seconds from region `a` to region `b`."""
        return (self.local_ms if a == b else self.one_way_ms[frozenset((a, b))]) / 1000.0

    def largest_delay(self) -> float:
        return max(self.delay(a, b) for a in self.regions for b in self.regions)


class GeoCluster:
    """The servers of a `Geography` under `root`; a context manager that stops them all
    (and the proxies). `start_args` go to every `crdtmds start`."""

    def __init__(
        self,
        root: Path,
        geography: Geography | None = None,
        *,
        admin: str = "admin",
        password: str = "admin-password",
        start_args: tuple[str, ...] = QUIET_START_ARGS,
    ) -> None:
        self.geography = geography or Geography()
        self.cluster = LocalCluster(
            root,
            self.geography.size,
            admin=admin,
            password=password,
            regions=list(self.geography.regions),
        )
        self.start_args = start_args
        self.proxies = DelayProxies()
        self.links: dict[tuple[int, int], ProxyLink] = {}
        """(from, to) server index -> the proxy `from` dials `to` through."""

    @property
    def servers(self) -> list[LocalServer]:
        return self.cluster.servers

    @property
    def urls(self) -> list[str]:
        """The servers' own URLs (not through a proxy)."""
        return self.cluster.urls

    def in_region(self, region: str) -> list[int]:
        return [i for i, server in enumerate(self.servers) if server.region == region]

    def start(self) -> GeoCluster:
        """Make the proxies, then init, join and start the servers (see `LocalCluster`);
        a server joins through the first one's own URL, which its `--dial-url` reroutes
        from then on (the join's peer is dialed at every start)."""
        self.proxies.start()
        servers = self.servers
        for a, b in itertools.permutations(range(len(servers)), 2):
            delay = self.geography.delay(servers[a].region, servers[b].region)
            self.links[a, b] = self.proxies.add(delay)
        for a, server in enumerate(servers):
            server.start_args = [*self.start_args]
            for b, other in enumerate(servers):
                if a != b:
                    server.start_args += ["--dial-url", f"{other.name}={self.links[a, b].url}"]
        self.cluster.start(START_TIMEOUT)
        for (_, b), link in self.links.items():
            link.target_port = urlsplit(servers[b].url).port or 0
        return self

    def cut(self, region: str) -> None:
        """Cut `region` off: every link between it and another region drops and refuses."""
        self.proxies.cut(self.crossing(region))

    def heal(self, region: str) -> None:
        self.proxies.heal(self.crossing(region))

    def crossing(self, region: str) -> list[ProxyLink]:
        """The proxies of the links between `region` and the other regions."""
        inside = set(self.in_region(region))
        return [link for (a, b), link in self.links.items() if (a in inside) != (b in inside)]

    async def statuses(self) -> list[dict[str, Any] | None]:
        """Every server's own status (None for one that did not answer)."""
        credentials = (self.cluster.admin, self.cluster.password)

        async def one(url: str) -> dict[str, Any] | None:
            try:
                return await query_status(url, timeout=5.0, credentials=credentials)
            except Exception:  # not answering (yet): the caller asks again
                return None

        return list(await asyncio.gather(*(one(url) for url in self.urls)))

    async def wait_connected(self, timeout: float) -> None:
        """Until every server has a live link with every other one."""
        wanted = len(self.servers) - 1

        def linked(status: dict[str, Any] | None) -> bool:
            return status is not None and len(status.get("peers", [])) >= wanted

        await self._poll(lambda answers: all(linked(s) for s in answers), timeout, "connected")

    async def wait_identical_heads(self, domain: str, timeout: float) -> list[str]:
        """Until every server holds `domain` with the same heads; returns them."""
        await self._poll(
            lambda answers: (
                len({_heads(s, domain) for s in answers}) == 1
                and _heads(answers[0], domain) is not None
            ),
            timeout,
            f"identical heads of {domain!r}",
        )
        return list(_heads((await self.statuses())[0], domain) or ())

    async def _poll(self, accept: Any, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not accept(answers := await self.statuses()):
            if loop.time() > deadline:
                seen = [_summary(s) for s in answers]
                raise TimeoutError(f"not {what} within {timeout:g} s: {seen}")
            await asyncio.sleep(POLL_SECONDS)

    def stop(self) -> None:
        self.cluster.stop()
        self.proxies.close()

    def __enter__(self) -> GeoCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _heads(status: dict[str, Any] | None, domain: str) -> tuple[str, ...] | None:
    if status is None or domain not in status.get("domains", {}):
        return None
    return tuple(status["domains"][domain]["heads"])


def _summary(status: dict[str, Any] | None) -> str:
    if status is None:
        return "no answer"
    return f"{status.get('name')}: {len(status.get('peers', []))} peers"
