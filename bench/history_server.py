"""Years of history through a whole server: the CPU of one publish (an edit of one host,
the session's publish: draft, revision entry, SQLite commit, the live document) at 1,000
and at 20,000 publishes, on two in-process servers side by side, one whose domain rolls
into epochs (`--epoch-publishes`) and one whose never does.

The receiving side is not measured here (bench/history.py measures it on the documents).
Each server's publishes run in turn, one of each per round; the epoch steps run in the
server's background worker and are waited for after each publish, outside the timing,
their cost reported apart (it is paid once per epoch on every server).

    .venv/bin/python bench/history_server.py [--sizes 1000,20000] [--epoch 1000] [--reps 40]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lib.command_line import base_parser, int_list, run
from lib.credentials import BENCH_ADMIN
from lib.node_dirs import init_node_dir
from lib.report import print_table, verdict, write_results
from lib.stats import median, ratio

from crdtmds.config import Limits
from crdtmds.server import Server

POOL = 200
NEVER = 10**9
TARGET = 2.0


class Publisher:
    """One in-process server and one session publishing edits of its hosts."""

    def __init__(self, server: Server, session: Any) -> None:
        self.server, self.session, self.count = server, session, 0
        self.uids: list[str] = []
        self.epoch_seconds = 0.0

    @classmethod
    async def create(cls, root: Path, name: str, epoch: int) -> Publisher:
        await init_node_dir(root / name, name)
        server = await Server.open(root / name, limits=Limits(epoch_publishes=epoch))
        await server.cluster_admin.create_domain("history", created_by=BENCH_ADMIN)
        session = await server.sessions.open("history", admin=BENCH_ADMIN)
        publisher = cls(server, session)
        for i in range(POOL):
            record = session.add_object("host", {"name": f"h{i}", "ipv4-address": "10.0.0.1"})
            publisher.uids.append(record["uid"])
        await publisher.publish_one()
        return publisher

    async def publish_one(self) -> float:
        """One edit and its publish; returns their CPU seconds."""
        n = self.count
        self.count += 1
        start = time.process_time()
        self.start_from_live()
        self.session.set_object(
            "host", {"uid": self.uids[n % POOL], "comments": f"publish {n}",
                     "ipv4-address": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"},
        )  # fmt: skip
        await self.server.sessions.publish(self.session)
        spent = time.process_time() - start
        start = time.process_time()
        await self.server.epochs.idle()
        self.epoch_seconds += time.process_time() - start
        return spent

    def start_from_live(self) -> None:
        # What `Call.editing` does before an edit: an empty draft moves to the newest epoch.
        session = self.session
        current = self.server.documents.current_epoch(session.domain)
        if session.base_heads != session.domain.heads() or current is not session.domain:
            self.server.sessions.start_from_live(session)

    async def publish_until(self, total: int) -> None:
        while self.count < total:
            await self.publish_one()


async def rounds(publishers: dict[str, Publisher], reps: int) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = {name: [] for name in publishers}
    names = list(publishers)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            spent[name].append(await publishers[name].publish_one() * 1000)
    return spent


async def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list, default=[1000, 20000])
    parser.add_argument("--epoch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtmds-history-") as tmp:
        publishers = {
            "epochs": await Publisher.create(Path(tmp), "epochs", args.epoch),
            "one document": await Publisher.create(Path(tmp), "whole", NEVER),
        }
        results: dict[str, Any] = {}
        started = time.time()
        for size in args.sizes:
            for publisher in publishers.values():
                await publisher.publish_until(size)
            print(f"{size} publishes each ({time.time() - started:.0f} s so far)", flush=True)
            spent = await rounds(publishers, args.reps)
            results[str(size)] = {name: median(values) for name, values in spent.items()}
        for publisher in publishers.values():
            await publisher.server.close()
    small, large = str(args.sizes[0]), str(args.sizes[-1])
    print_table(
        "CPU ms per edit + publish, median (interleaved)",
        ["publishes", *publishers],
        [[size, *(row[name] for name in publishers)] for size, row in results.items()],
    )
    ratios = {name: ratio(results[large][name], results[small][name]) for name in publishers}
    print_table(
        f"publish at {large} / at {small} (target <= {TARGET})",
        ["design", "ratio", ""],
        [[name, value, verdict(value, TARGET, at_least=False)] for name, value in ratios.items()],
    )
    epochs = publishers["epochs"]
    print(f"epoch steps on the epochs server: {epochs.epoch_seconds:.1f} s CPU in all")
    write_results(
        args.out,
        "history_server",
        parameters={"sizes": args.sizes, "epoch": args.epoch, "reps": args.reps, "pool": POOL},
        results={"median_cpu_ms": results, "ratios": ratios,
                 "epoch_steps_cpu_s": epochs.epoch_seconds},
        targets={"publish at largest / at smallest": f"<= {TARGET}"},
    )


if __name__ == "__main__":
    run(main)
