"""Median time for a server to refuse a `/sync` client with a wrong password, for unknown
user names and for a real one: equal medians mean the refusal does not tell them apart.

    .venv/bin/python bench/sync_rejection_latency.py [--attempts 40]

Runs one server in this process on 127.0.0.1 (OS-assigned port) with a login limit high
enough that no attempt is throttled, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from lib.credentials import BENCH_ADMIN
from lib.node_dirs import init_node_dir
from lib.stats import median
from lib.timing import now
from websockets.asyncio.client import connect

from crdtmds.config import Limits
from crdtmds.server import Server
from crdtmds.sync.protocol import Join, decode, encode


async def refusal_seconds(url: str, user: str) -> float:
    """Seconds from sending the join to receiving the refusal."""
    query = urlencode({"user": user, "password": "not-the-password"})
    async with connect(f"{url}/sync?{query}", proxy=None) as ws:
        started = now()
        await ws.send(encode(Join(sender_id="latency-probe")))
        reply = decode(await asyncio.wait_for(ws.recv(), 10))
        elapsed = now() - started
    assert type(reply).__name__ == "Error", reply
    return elapsed


async def measure(attempts: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        await init_node_dir(Path(directory), name="n1")
        limits = Limits(login_failures=10**6)
        node = await Server.open(Path(directory), limits=limits)
        await node.start(mesh=False)
        try:
            await refusal_seconds(node.config.url, "warm-up")
            unknown, known = [], []
            for index in range(attempts):
                unknown.append(await refusal_seconds(node.config.url, f"nobody-{index}"))
                known.append(await refusal_seconds(node.config.url, BENCH_ADMIN))
        finally:
            await node.stop()
    return {
        "attempts": attempts,
        "unknown-median-ms": round(median(unknown) * 1000, 2),
        "known-median-ms": round(median(known) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=40)
    print(json.dumps(asyncio.run(measure(parser.parse_args().attempts))))


if __name__ == "__main__":
    main()
