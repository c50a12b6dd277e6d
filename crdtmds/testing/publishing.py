"""Steady publishing on many servers, and the check that nothing acknowledged was lost.

`Publishers` keeps logged-in API clients per server (a login costs a deliberately slow
password hash, which must not be mistaken for the cost of publishing); each publish adds
one host, so every acknowledged publish leaves a name to look for on every server
afterwards (`missing_hosts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from crdtmds.client import Client

PAGE = 500
"""Hosts per `show-hosts` page (the API's largest)."""
REPLY_TIMEOUT = 30.0


@dataclass(slots=True)
class Publish:
    """One publish of one host on server `server` (an index), and how it went."""

    index: int
    server: int
    host: str = ""
    """The name of the host it adds."""
    due: float = 0.0
    """When it was asked for (`time.perf_counter`, as every time here); it waits for an
    idle client of its server until `started`."""
    started: float = 0.0
    """When a client of its server took it."""
    sent: float = 0.0
    """When its `publish` command went (after its `add-host`)."""
    acknowledged: float = 0.0
    """When the reply to `publish` came, 0 if none did."""
    change: bytes = b""
    """The hash of the publish's change (its revision's head)."""
    error: str = ""


class Publishers:
    """`per_server` logged-in clients of `domain` on each of `urls`; the hosts they add
    are named `host_prefix`-N."""

    def __init__(
        self,
        urls: Sequence[str],
        domain: str,
        *,
        user: str,
        password: str,
        host_prefix: str = "geo",
    ) -> None:
        self.urls = list(urls)
        self.domain = domain
        self.host_prefix = host_prefix
        self.user = user
        self.password = password
        self.idle: list[asyncio.Queue[Client]] = [asyncio.Queue() for _ in self.urls]
        self.clients: list[Client] = []
        self.done: list[Publish] = []

    async def login(self, per_server: int) -> None:
        for server, url in enumerate(self.urls):
            for _ in range(per_server):
                client = Client(
                    [url], user=self.user, password=self.password, domain=self.domain,
                    reply_timeout=REPLY_TIMEOUT,
                )  # fmt: skip
                await client.login()
                self.clients.append(client)
                self.idle[server].put_nowait(client)

    async def publish(self, server: int) -> Publish:
        """Add one host on `server` and publish it (waiting for an idle client there)."""
        index = len(self.done)
        publish = Publish(index, server, f"{self.host_prefix}-{index}", time.perf_counter())
        self.done.append(publish)
        client = await self.idle[server].get()
        publish.started = time.perf_counter()
        try:
            address = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
            await client.call("add-host", name=publish.host, **{"ipv4-address": address})
            publish.sent = time.perf_counter()
            reply = await client.call("publish")
            publish.acknowledged = time.perf_counter()
            publish.change = bytes.fromhex(reply["revision"]["change"])
        except Exception as exc:  # recorded: a publish without a reply is not counted
            publish.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.idle[server].put_nowait(client)
        return publish

    async def steadily(
        self, rate: float, seconds: float, servers: Sequence[int], rng: random.Random
    ) -> list[Publish]:
        """One publish every 1/`rate` seconds on a server drawn from `servers` (open
        loop: a slow publish does not delay the next); returns them once all are done."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for count in range(int(rate * seconds)):
            wait = start + count / rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(self.publish(rng.choice(servers))))
        return list(await asyncio.gather(*tasks))

    def acknowledged(self) -> list[Publish]:
        return [p for p in self.done if p.acknowledged]

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()


async def host_names(url: str, domain: str, *, user: str, password: str) -> set[str]:
    """Every host name of `domain` on the server at `url`."""
    names: set[str] = set()
    async with Client([url], user=user, password=password, domain=domain) as client:
        while True:
            reply = await client.call("show-hosts", limit=PAGE, offset=len(names))
            names.update(obj["name"] for obj in reply["objects"])
            if not reply["objects"] or len(names) >= reply.get("total", 0):
                return names


async def missing_hosts(
    urls: Sequence[str], domain: str, hosts: Sequence[str], *, user: str, password: str
) -> dict[str, list[str]]:
    """Per server URL, the `hosts` it does not hold (servers missing none are left out)."""
    held = await asyncio.gather(
        *(host_names(url, domain, user=user, password=password) for url in urls)
    )
    wanted = set(hosts)
    return {
        url: sorted(wanted - names) for url, names in zip(urls, held, strict=True) if wanted - names
    }
