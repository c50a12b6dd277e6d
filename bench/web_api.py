"""The Web API door against the WebSocket `/api`: the same administrator work through each.

One real server process (``crdtmds start --web-api 127.0.0.1:0``) and one domain. The
administrator's work is ``--ops`` times ``add-host`` then ``publish`` (one *op* is the
pair), and ``--show-ops`` times ``show-host``. It goes to the same server through three
clients, one login each, one request at a time:

- *web api, aiohttp*: Check Point's Management Web API over HTTPS from an aiohttp
  ``ClientSession`` limited to one keep-alive connection (TLS verified against the
  certificate in the server's data directory), one POST per command;
- *web api, http.client*: the same over one keep-alive ``http.client.HTTPSConnection``
  (blocking calls, harmless here: nothing else runs meanwhile in this process);
- *websocket*: the JSON API over the WebSocket ``/api`` (plain ``ws://`` on loopback),
  from the Python client ``crdtmds.client.Client``. With ``--wss`` the server has a
  certificate (``init --tls-cert``) and this is ``wss://``: both doors then pay for TLS.

Every repetition times one block per client and kind of work, in an order reversed every
other repetition. Throughput = block size / median block time; *ratio* = Web API /
WebSocket, for each Web API client. Each publish is also timed alone (request sent ->
reply parsed). The CPU time of the server process and of this process per op are
reported per client: unlike wall-clock times on a shared machine they move little from
run to run, and they tell the server's share of a door's cost from the client's.

Targets: ratio >= 0.8 for both kinds; p99 of a publish over HTTPS < 50 ms.

    .venv/bin/python bench/web_api.py [--ops 200] [--show-ops 1000] [--reps 9] [--quick] [--wss]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from lib.cluster import BenchCluster, wait_for_status
from lib.command_line import base_parser, run
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD
from lib.report import plot, print_table, verdict, write_results
from lib.resources import process_cpu_seconds
from lib.stats import median, ratio, summary
from lib.timing import now

from crdtmds.client import Client
from crdtmds.config import WEB_API_CERT_FILE
from crdtmds.status_query import query_status
from crdtmds.tls import make_self_signed

NAME = "web_api"
DOMAIN = "web-bench"
TARGET_RATIO = 0.8
TARGET_PUBLISH_P99_SECONDS = 0.050
AIOHTTP, HTTP_CLIENT, WEBSOCKET = "web api, aiohttp", "web api, http.client", "websocket"
DOORS = (AIOHTTP, HTTP_CLIENT, WEBSOCKET)
WEB_DOORS = (AIOHTTP, HTTP_CLIENT)
KINDS = ("add-host + publish", "show-host")
QUICK = {"ops": 5, "show_ops": 10, "reps": 2, "warmup": 3}


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ops", type=int, default=200, help="add-host + publish per timed block (200)"
    )
    parser.add_argument(
        "--show-ops", type=int, default=1000, help="show-host per timed block (1000)"
    )
    parser.add_argument("--reps", type=int, default=9, help="repetitions (9)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed ops per door (30)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (the smoke test): 5 ops, 2 reps"
    )
    parser.add_argument(
        "--wss", action="store_true", help="the WebSocket /api over TLS too (wss://)"
    )
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


class WebApiFailed(RuntimeError):
    pass


class CountingConnector(aiohttp.TCPConnector):
    """A connector that notes the connections it hands out (a trace config would, but
    its callbacks would cost every request some of the client's time)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocols: set[Any] = set()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        self.protocols.add(connection.protocol)
        return connection


class WebApiClient:
    """One login over HTTPS, one keep-alive connection: POST /web_api/COMMAND."""

    def __init__(self, url: str, cafile: Path) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        self.base = url.rstrip("/") + "/web_api/"
        self.connector = CountingConnector(limit=1, ssl=context, force_close=False)
        self.session = aiohttp.ClientSession(connector=self.connector, json_serialize=json.dumps)
        self.headers: dict[str, str] = {}

    @property
    def connections(self) -> int:
        return len(self.connector.protocols)

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        async with self.session.post(
            self.base + command, data=json.dumps(params), headers=self.headers
        ) as response:
            body = await response.read()
        reply = json.loads(body)
        if response.status != 200:
            raise WebApiFailed(f"{command}: {response.status} {reply}")
        return reply

    async def login(self) -> None:
        self.headers = {"Content-Type": "application/json"}
        reply = await self.call("login", user=BENCH_ADMIN, password=BENCH_PASSWORD, domain=DOMAIN)
        self.headers["X-chkp-sid"] = reply["sid"]

    async def close(self) -> None:
        try:
            await self.call("logout")
        finally:
            await self.session.close()


class OneWriteHTTPSConnection(http.client.HTTPSConnection):
    """`http.client` sends a request's head and its body in two writes (two TLS records,
    two packets, two wake-ups of the server); this sends them in one, as curl, Go's
    `net/http` and aiohttp's client do, and as the WebSocket client sends one frame."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes):
            super()._send_output(message_body, encode_chunked)
            return
        self._buffer.extend((b"", b""))  # the blank line ending the head
        head = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(head + message_body)


class BlockingWebApiClient:
    """One login over HTTPS on one keep-alive `http.client` connection."""

    def __init__(self, url: str, cafile: Path) -> None:
        parts = urlsplit(url)
        context = ssl.create_default_context(cafile=str(cafile))
        self.connection = OneWriteHTTPSConnection(
            parts.hostname or "127.0.0.1", parts.port, context=context, timeout=30.0
        )
        self.connections = 0
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        if self.connection.sock is None:
            self.connections += 1
        body = json.dumps(params).encode()
        self.connection.request("POST", "/web_api/" + command, body, self.headers)
        response = self.connection.getresponse()
        reply = json.loads(response.read())
        if response.status != 200:
            raise WebApiFailed(f"{command}: {response.status} {reply}")
        return reply

    async def login(self) -> None:
        reply = await self.call("login", user=BENCH_ADMIN, password=BENCH_PASSWORD, domain=DOMAIN)
        self.headers["X-chkp-sid"] = reply["sid"]

    async def close(self) -> None:
        try:
            await self.call("logout")
        finally:
            self.connection.close()


class Door:
    """One client, the hosts it made, and the publish latencies it saw."""

    def __init__(self, name: str, call: Callable[..., Awaitable[dict[str, Any]]]) -> None:
        self.name = name
        self.call = call
        self.number = DOORS.index(name) + 1
        self.made: list[str] = []
        self.publish_seconds: list[float] = []

    async def add_and_publish(self, ops: int, *, timed: bool = True) -> None:
        for _ in range(ops):
            name = f"door{self.number}-{len(self.made)}"
            high, low = divmod(len(self.made), 250)
            address = f"10.{self.number}.{high}.{low + 1}"
            await self.call("add-host", **{"name": name, "ipv4-address": address})
            start = now()
            await self.call("publish")
            if timed:
                self.publish_seconds.append(now() - start)
            self.made.append(name)

    async def show(self, ops: int, first: int) -> None:
        for i in range(first, first + ops):
            reply = await self.call("show-host", name=self.made[i % len(self.made)])
            assert reply.get("name"), reply


Samples = dict[tuple[str, str], dict[str, list[float]]]


async def timed_blocks(
    args: argparse.Namespace, doors: dict[str, Door], server_pid: int
) -> Samples:
    """Every (client, kind) block once per repetition, the order reversed every other one.
    Per block: wall seconds, this process's CPU seconds, the server's CPU seconds."""
    cases = [(door, kind) for kind in KINDS for door in DOORS]
    samples: Samples = {case: {"wall": [], "cpu": [], "server_cpu": []} for case in cases}
    for repetition in range(args.reps):
        order = cases if repetition % 2 == 0 else cases[::-1]
        for door_name, kind in order:
            door = doors[door_name]
            server_before = process_cpu_seconds(server_pid)
            cpu_before = time.process_time()
            start = now()
            if kind == KINDS[0]:
                await door.add_and_publish(args.ops)
            else:
                await door.show(args.show_ops, repetition * args.show_ops)
            wall = now() - start
            sample = samples[door_name, kind]
            sample["wall"].append(wall)
            sample["cpu"].append(time.process_time() - cpu_before)
            sample["server_cpu"].append(process_cpu_seconds(server_pid) - server_before)
        print(f"  repetition {repetition + 1}/{args.reps} done", flush=True)
    return samples


def summarise(args: argparse.Namespace, samples: Samples) -> dict[str, Any]:
    """Per kind of work: each client's figures, and each Web API client's ratio to the
    WebSocket (of the medians, and repetition by repetition)."""
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        block = args.ops if kind == KINDS[0] else args.show_ops
        entry: dict[str, Any] = {}
        for door in DOORS:
            sample = samples[door, kind]
            ops = block * len(sample["wall"])
            entry[door] = {
                "ops_per_second": ratio(block, median(sample["wall"])),
                "median_block_seconds": median(sample["wall"]),
                "block_seconds": sample["wall"],
                "bench_cpu_ms_per_op": 1000 * sum(sample["cpu"]) / ops,
                "server_cpu_ms_per_op": 1000 * sum(sample["server_cpu"]) / ops,
            }
        socket_walls = samples[WEBSOCKET, kind]["wall"]
        entry["ratio_to_websocket"] = {
            door: {
                "median": ratio(entry[door]["ops_per_second"], entry[WEBSOCKET]["ops_per_second"]),
                "per_repetition": [
                    ratio(socket, web)
                    for web, socket in zip(samples[door, kind]["wall"], socket_walls, strict=True)
                ],
            }
            for door in WEB_DOORS
        }
        per_kind[kind] = entry
    return per_kind


def report(per_kind: dict[str, Any], publishes: dict[str, dict[str, float]]) -> None:
    rows = [
        [kind, door, per_kind[kind][door]["ops_per_second"],
         per_kind[kind][door]["server_cpu_ms_per_op"], per_kind[kind][door]["bench_cpu_ms_per_op"]]
        for kind in KINDS
        for door in DOORS
    ]  # fmt: skip
    print_table(
        "Throughput (median block), CPU per op",
        ["work", "client", "ops/s", "server CPU ms/op", "bench CPU ms/op"],
        rows,
    )
    print_table(
        "Publish reply (request sent -> reply read), ms",
        ["client", "count", "p50", "p99", "max"],
        [
            [door, int(s["count"]), 1000 * s["p50"], 1000 * s["p99"], 1000 * s["max"]]
            for door, s in publishes.items()
        ],
    )
    print()
    for kind in KINDS:
        for door in WEB_DOORS:
            figures = per_kind[kind]["ratio_to_websocket"][door]
            value, spread = figures["median"], figures["per_repetition"]
            print(
                f"ratio {door} / websocket, {kind}: {value:.2f} (target >= {TARGET_RATIO}: "
                f"{verdict(value, TARGET_RATIO, at_least=True)}; per repetition "
                f"{min(spread):.2f} to {max(spread):.2f})"
            )
    for door in WEB_DOORS:
        p50, p99 = publishes[door]["p50"], publishes[door]["p99"]
        print(
            f"publish over HTTPS ({door}): p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms "
            f"(target p99 < {1000 * TARGET_PUBLISH_P99_SECONDS:.0f} ms: "
            f"{verdict(p99, TARGET_PUBLISH_P99_SECONDS, at_least=False)})"
        )


async def start_server(root: Path, *, wss: bool = False) -> tuple[BenchCluster, str, Path]:
    """One server with a Web API on a free port; returns it, the Web API's URL (from
    `show-status`) and its certificate. With `wss`, the server's certificate serves the
    WebSocket too (and the Web API)."""
    cluster = BenchCluster(root, 1)
    cluster.servers[0].start_args = ["--web-api", "127.0.0.1:0"]
    cafile = cluster.servers[0].data_dir / WEB_API_CERT_FILE
    if wss:
        cafile, key = root / "tls-cert.pem", root / "tls-key.pem"
        make_self_signed(cafile, key, ["127.0.0.1", "localhost"])
        cluster.init_args = ["--tls-cert", str(cafile), "--tls-key", str(key)]
        # crdtmds.client trusts the system's store, which this variable extends.
        os.environ["SSL_CERT_FILE"] = str(cafile)
    cluster.start()
    server = cluster.servers[0]
    credentials = (BENCH_ADMIN, BENCH_PASSWORD)
    web = (await query_status(server.url, timeout=5.0, credentials=credentials)).get("web-api")
    if not isinstance(web, dict) or not web.get("url"):
        cluster.stop()
        raise RuntimeError(f"the server reports no Web API: {web!r}")
    return cluster, str(web["url"]), cafile


async def measure(args: argparse.Namespace, cluster: BenchCluster, web_url: str, cafile: Path):
    server = cluster.servers[0]
    async with Client([server.url], user=BENCH_ADMIN, password=BENCH_PASSWORD) as admin:
        await admin.call("add-domain", name=DOMAIN)
    await wait_for_status([server.url], lambda s: DOMAIN in s.get("domains", {}), 30.0, DOMAIN)
    aio = WebApiClient(web_url, cafile)
    blocking = BlockingWebApiClient(web_url, cafile)
    socket_client = Client([server.url], user=BENCH_ADMIN, password=BENCH_PASSWORD, domain=DOMAIN)
    try:
        for client in (aio, blocking, socket_client):
            await client.login()
        doors = {
            AIOHTTP: Door(AIOHTTP, aio.call),
            HTTP_CLIENT: Door(HTTP_CLIENT, blocking.call),
            WEBSOCKET: Door(WEBSOCKET, socket_client.call),
        }
        for door in doors.values():
            await door.add_and_publish(args.warmup, timed=False)
        print(
            f"web api at {web_url}, websocket at {server.url}; {args.reps} repetitions of "
            f"{args.ops} add-host + publish and {args.show_ops} show-host per client ...",
            flush=True,
        )
        assert server.process is not None
        samples = await timed_blocks(args, doors, server.process.pid)
    finally:
        await socket_client.close()
        await blocking.close()
        await aio.close()
    connections = {AIOHTTP: aio.connections, HTTP_CLIENT: blocking.connections}
    return doors, samples, connections


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtmds-web-bench-") as tmp:
        print("starting the server ...", flush=True)
        cluster, web_url, cafile = await start_server(Path(tmp), wss=args.wss)
        with cluster:
            doors, samples, connections = await measure(args, cluster, web_url, cafile)
    per_kind = summarise(args, samples)
    publishes = {name: summary(door.publish_seconds) for name, door in doors.items()}
    report(per_kind, publishes)
    print(f"HTTPS connections opened (keep-alive: 1 each expected): {connections}")
    write_results(
        args.out,
        NAME,
        parameters={
            "ops": args.ops,
            "show_ops": args.show_ops,
            "reps": args.reps,
            "warmup": args.warmup,
            "quick": args.quick,
            "wss": args.wss,
        },
        results={
            "throughput": per_kind,
            "publish_seconds": publishes,
            "https_connections": connections,
        },
        targets={
            "ratio_at_least": TARGET_RATIO,
            "web_api_publish_p99_seconds_below": TARGET_PUBLISH_P99_SECONDS,
        },
    )
    plot(args.out, NAME, lambda axes: draw(axes, doors), enabled=not args.no_plot)


def draw(axes: Any, doors: dict[str, Door]) -> None:
    for name, door in doors.items():
        values = sorted(1000 * s for s in door.publish_seconds)
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        axes.plot(values, fractions, label=name)
    axes.set_xlabel("publish reply, ms")
    axes.set_ylabel("fraction of publishes")
    axes.set_title("publish latency by client (one server)")
    axes.set_xscale("log")
    axes.legend()


if __name__ == "__main__":
    run(main)
