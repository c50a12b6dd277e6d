"""Propagation throughput: crdtmds servers vs JavaScript automerge-repo servers and Python
`automerge.repo.Repo` peers.

Every system gets the same workload through the same door, in one run (`--systems`
picks some). Three peers of each system, each a process of its own, are wired alike: a
hub that the two others dial.

- crdtmds: three servers (`--no-mesh`); each commits every change to SQLite before
  forwarding it;
- js-repo-nodefs: the stock JavaScript `@automerge/automerge-repo` 2.5 `Repo` with its
  WebSocket server adapter and its NodeFS storage adapter (`bench/js/repo_server.mjs`,
  a folder per server), which writes a document's new changes to a file at most every
  100 ms;
- js-repo-memory: the same servers without storage;
- automerge.repo: Python's ``automerge.repo.Repo`` with
  ``automerge.transports.WebSocketServer`` / ``WebSocketClientTransport``, in memory.

A writer in this process connects to one of them over the automerge-repo protocol (to the
crdtmds servers, as a server of their cluster) and streams N changes into a new document,
each change one host record, as fast as it can, one change per sync message or a batch
of them (``--batches``: 1 is a stream of single changes, 10 is closer to publishes of
several edits); one observer connection per peer notes when that peer holds all of
them. The observers keep only the change graph (``--observer document`` makes them
apply every change, for comparison). Throughput is N divided by the time from the first
write until every peer holds every change. The crdtmds and JavaScript servers serve
every run; each run of the Python repos gets three fresh processes (they keep working
for seconds after every peer holds everything, and one kept through many runs stopped
accepting connections). Before each run the script waits until the peer processes are
idle, so no backlog takes a core from the run. The JavaScript servers need `bench/js`'s
npm packages: the script installs them at the versions of its lock file
(`npm install --prefix bench/js`) when they are missing.

The writer (``--writer``):

- prebuilt (default): before the clock starts, a real Automerge document gets its N
  changes and each sync message is encoded, envelope and all (`GraphPeer.prepare`:
  heads after its changes, no need, a last sync at those heads); the document itself
  (its first change) is announced and held by every peer before the clock too. Timed,
  the writer only hands the ready frames to its socket, one after another, and answers
  the peer's replies as Automerge's sync state would (`GraphSync`): a few
  microseconds per change, the same for every system, so the figure is the peers'.
- live: the changes are made during the timed window, each an Automerge transaction, and
  the writer's Automerge sync state (through `crdtmds.sync.gossip.Gossip`) generates the
  messages: about a millisecond of this process per change, which bounds what a fast
  peer can show. For comparison.

- chain: the writer feeds a leaf; changes go leaf -> hub -> other leaf (two hops);
- star: the writer feeds the hub; changes go to both leaves at once (one hop).

Targets: crdtmds at least 1.5x the throughput of the durable JavaScript servers
(js-repo-nodefs) and 10x that of the Python Repo; the in-memory JavaScript figure is
reported without a target.

    .venv/bin/python bench/peers.py [--changes 1000] [--reps 3] [--writer prebuilt|live]
        [--observer graph|document] [--systems crdtmds,js-repo-nodefs,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automerge.core import ROOT, Document, ObjType, ScalarType
from lib.change_graph import Offer
from lib.cluster import BenchCluster
from lib.command_line import base_parser, int_list, run
from lib.credentials import server_join_metadata
from lib.node_dirs import read_node_config
from lib.observers import GraphPeer, add_observer_option, observer_holds, start_observer
from lib.repo_processes import ensure_js_packages, js_server_command, start_star
from lib.report import print_table, verdict, write_results
from lib.resources import cpu_seconds
from lib.stats import median, ratio
from lib.sync_peer import MemoryDocuments, SyncPeer
from lib.timing import now, wait_until

from crdtmds.sync.protocol import new_document_id

NAME = "peers"
TOPOLOGIES = ("chain", "star")
SYSTEMS = ("crdtmds", "js-repo-nodefs", "js-repo-memory", "automerge.repo")
JS_SYSTEMS = ("js-repo-nodefs", "js-repo-memory")
TARGET_RATIOS = {"js-repo-nodefs": 1.5, "automerge.repo": 10.0}
"""crdtmds' throughput over each system's, at least; systems not here have no target."""
WRITER_KINDS = ("prebuilt", "live")
QUIET_WINDOW = 0.25
QUIET_CPU_SHARE = 0.05


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000, help="changes per run (1000)")
    parser.add_argument("--reps", type=int, default=3, help="runs per system and case")
    parser.add_argument(
        "--batches",
        default="1,10",
        help="changes the writer makes between two sync rounds, one case each (default 1,10)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    add_observer_option(parser)
    parser.add_argument(
        "--writer",
        choices=WRITER_KINDS,
        default="prebuilt",
        help="changes and messages built before the clock (default) or made while timed",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="uncounted runs of the first case before the others, for the peers that serve"
        " every run (default 1)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"systems to run, comma-separated; crdtmds always runs (default {','.join(SYSTEMS)})",
    )
    parser.add_argument("--repo-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dial", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = int_list(args.batches)
    chosen = {name.strip() for name in args.systems.split(",") if name.strip()}
    if chosen - set(SYSTEMS):
        parser.error(f"--systems: unknown {', '.join(sorted(chosen - set(SYSTEMS)))}")
    args.systems = [system for system in SYSTEMS if system in chosen | {"crdtmds"}]
    return args


# ---------------------------------------------------------------- a Python repo process


async def repo_child(dial: list[str]) -> None:
    """One `automerge.repo.Repo` with a WebSocket server; runs until stdin closes."""
    from automerge.repo import InMemoryStorage, Repo
    from automerge.transports import WebSocketClientTransport, WebSocketServer

    warnings.simplefilter("ignore", DeprecationWarning)
    repo = await Repo.load(InMemoryStorage())
    await repo.start()
    server = WebSocketServer(repo, "127.0.0.1", 0)
    await server.start()
    port = server._server.sockets[0].getsockname()[1]  # the helper keeps its server private
    connections = []
    for url in dial:
        transport = await WebSocketClientTransport.connect(url)
        connections.append(asyncio.create_task(repo.connect(transport)))
    print(f"listening on ws://127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def repo_child_command(dial: list[str], role: str) -> list[str]:
    """The command line of one `repo_child` process (for `start_star`)."""
    command = [sys.executable, __file__, "--repo-child"]
    for url in dial:
        command += ["--dial", url]
    return command


# ---------------------------------------------------------------- the peers under test


@dataclass
class Peers:
    """Three peers of one system: index 0 is the hub, 1 and 2 dial it."""

    system: str
    urls: list[str]
    pids: list[int]
    join_metadata: Callable[[str], dict[str, Any] | None]
    """Fresh join metadata for a connection of ours with this name (a proof is single-use)."""


async def crdtmds_peers(root: Path, stack: contextlib.ExitStack) -> Peers:
    cluster = stack.enter_context(BenchCluster(root / "crdtmds", 3, star=True))
    cluster.start()
    await cluster.wait_connected(links=1)
    config = await read_node_config(cluster.servers[0].data_dir)
    pids = [server.process.pid for server in cluster.servers if server.process is not None]
    return Peers("crdtmds", cluster.urls, pids, lambda name: server_join_metadata(config, name))


def process_peers(
    system: str,
    command: Callable[[list[str], str], list[str]],
    root: Path,
    stack: contextlib.ExitStack,
) -> Peers:
    """Three processes of another implementation (see `start_star`), stopped with `stack`."""
    started = start_star(command, root, stack)
    return Peers(
        system,
        [peer.url for peer in started],
        [peer.process.pid for peer in started],
        lambda name: None,
    )


def repo_peers(root: Path, stack: contextlib.ExitStack) -> Peers:
    """Three fresh Python `automerge.repo.Repo` processes."""
    return process_peers("automerge.repo", repo_child_command, root, stack)


def js_peers(system: str, root: Path, stack: contextlib.ExitStack) -> Peers:
    """Three JavaScript automerge-repo servers: with NodeFS storage under `root` for
    js-repo-nodefs, in memory for js-repo-memory."""
    storage = root / "storage" if system == "js-repo-nodefs" else None
    return process_peers(system, js_server_command(storage), root, stack)


async def settle(pids: list[int], timeout: float) -> float:
    """Wait until the peer processes are idle, together under `QUIET_CPU_SHARE` of a core:
    a peer still working off one run's backlog would take a core from the next run's
    peers. Returns the seconds waited (`timeout` at most)."""
    start = now()
    while now() - start < timeout:
        before = cpu_seconds(pids)
        await asyncio.sleep(QUIET_WINDOW)
        if cpu_seconds(pids) - before < QUIET_CPU_SHARE * QUIET_WINDOW:
            break
    return now() - start


# ---------------------------------------------------------------- one run


def host_change(doc: Document, objects: bytes, index: int) -> None:
    """One change adding one host record, shaped like crdtmds' own."""
    uid = f"00000000-0000-4000-8000-{index:012d}"
    with doc.transaction() as tx:
        host = tx.put_object(objects, uid, ObjType.Map)
        for key, value in (
            ("uid", uid),
            ("type", "host"),
            ("name", f"host-{index}"),
            ("comments", ""),
            ("color", "black"),
            ("ipv4-address", f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"),
        ):
            tx.put(host, key, ScalarType.Str, value)
        tx.put_object(host, "tags", ObjType.List)


async def attach_observers(peers: Peers, document_id: str, kind: str) -> list[SyncPeer]:
    """One observer of `kind` per peer (see `lib.observers`)."""
    observers: list[SyncPeer] = []
    for index, url in enumerate(peers.urls):
        name = f"bench-observer-{index}"
        metadata = peers.join_metadata(name)
        observers.append(await start_observer(kind, url, document_id, metadata=metadata, name=name))
    return observers


def new_source() -> tuple[Document, bytes]:
    """The writer's document: one change making the `objects` map (returned too)."""
    source = Document()
    with source.transaction() as tx:
        objects = tx.put_object(ROOT, "objects", ObjType.Map)
    return source, objects


async def start_writer(
    peers: Peers, url: str, document_id: str, source: Document, kind: str
) -> SyncPeer:
    """The writer's connection, having announced the document as `source` has it."""
    metadata = peers.join_metadata("bench-writer")
    if kind == "live":
        store = MemoryDocuments({document_id: source})
        return await SyncPeer(url, store, metadata=metadata, name="bench-writer").start()
    writer = await GraphPeer(url, metadata=metadata, name="bench-writer").start()
    chunks = [change.bytes for change in source.get_changes([])]
    for offer in writer.prepare(document_id, [chunks]):
        writer.write(document_id, offer)
    return writer


def prebuilt_offers(
    writer: GraphPeer,
    document_id: str,
    source: Document,
    objects: bytes,
    changes: int,
    batch: int,
) -> list[Offer]:
    """Make the changes in `source` and encode the messages that will carry them."""
    before = source.get_heads()
    for index in range(changes):
        host_change(source, objects, index)
    chunks = [change.bytes for change in source.get_changes(before)]
    batches = [chunks[i : i + batch] for i in range(0, len(chunks), batch)]
    return writer.prepare(document_id, batches)


async def write_live(
    writer: SyncPeer,
    document_id: str,
    source: Document,
    objects: bytes,
    changes: int,
    batch: int,
) -> None:
    """Make the changes now, offering them to the peer after every `batch`."""
    for index in range(changes):
        host_change(source, objects, index)
        if (index + 1) % batch == 0 or index + 1 == changes:
            writer.document_changed(document_id)
            await asyncio.sleep(0)


async def propagate(
    peers: Peers, topology: str, changes: int, batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Stream `changes` changes into one peer, `batch` per sync message of the writer;
    seconds until all three peers hold them all."""
    document_id = new_document_id()
    source, objects = new_source()
    entry = 1 if topology == "chain" else 0
    writer = await start_writer(peers, peers.urls[entry], document_id, source, args.writer)
    observers = await attach_observers(peers, document_id, args.observer)
    timeout = args.timeout
    try:
        heads = source.get_heads()
        await wait_until(
            lambda: all(observer_holds(o, document_id, heads) for o in observers),
            timeout,
            "the new document on every peer",
        )
        offers: list[Offer] = []
        if isinstance(writer, GraphPeer):
            offers = prebuilt_offers(writer, document_id, source, objects, changes, batch)
        start = now()
        cpu_start = time.process_time()
        peers_cpu_start = cpu_seconds(peers.pids)
        observers_cpu_start = sum(o.handling_cpu for o in observers)
        if isinstance(writer, GraphPeer):
            await writer.stream(document_id, offers)
        else:
            await write_live(writer, document_id, source, objects, changes, batch)
        written = now() - start
        heads = source.get_heads()
        await wait_until(
            lambda: (
                all(observer_holds(o, document_id, heads) for o in observers)
                or any(p.failure for p in (writer, *observers))
            ),
            timeout,
            f"{changes} changes on every {peers.system} peer",
        )
        failures = [p.failure for p in (writer, *observers) if p.failure]
        if failures:
            raise RuntimeError(f"a {peers.system} peer dropped a connection: {failures[0]}")
        seconds = now() - start
        cpu = time.process_time() - cpu_start
        peers_cpu = cpu_seconds(peers.pids) - peers_cpu_start
        observers_cpu = sum(o.handling_cpu for o in observers) - observers_cpu_start
    finally:
        await asyncio.gather(writer.close(), *(o.close() for o in observers))
    return {
        "seconds": seconds,
        "write_seconds": written,
        "changes_per_second": changes / seconds,
        "bench_cpu_seconds": cpu,
        "bench_cpu_ms_per_change": 1000 * cpu / changes,
        "observer_cpu_ms_per_change": 1000 * observers_cpu / changes,
        "peers_cpu_ms_per_change": 1000 * peers_cpu / changes,
    }


# ---------------------------------------------------------------- the run


def case_name(batch: int, topology: str) -> str:
    return f"{topology}, {batch} per message"


async def benchmark(args: argparse.Namespace) -> None:
    cases = [(batch, topology) for batch in args.batches for topology in TOPOLOGIES]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        system: {case_name(*case): [] for case in cases} for system in args.systems
    }
    if any(system in JS_SYSTEMS for system in args.systems):
        try:
            ensure_js_packages()
        except RuntimeError as exc:
            raise SystemExit(f"peers.py: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-peers-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            resident = await start_resident(args.systems, root, stack)
            await warm_up(resident, cases[0], args)
            count = 0
            for repetition in range(args.reps):
                for batch, topology in cases:
                    order = args.systems if repetition % 2 == 0 else args.systems[::-1]
                    for system in order:
                        count += 1
                        folder = root / f"run-{count}"
                        result = await run_case(folder, resident, system, topology, batch, args)
                        runs[system][case_name(batch, topology)].append(result)
    report(args, runs)


async def start_resident(
    systems: list[str], root: Path, stack: contextlib.ExitStack
) -> dict[str, Peers]:
    """The peers that serve every run: the crdtmds servers and the JavaScript servers."""
    resident: dict[str, Peers] = {}
    for system in systems:
        if system == "crdtmds":
            print("starting 3 crdtmds servers ...", flush=True)
            resident[system] = await crdtmds_peers(root, stack)
        elif system in JS_SYSTEMS:
            print(f"starting 3 {system} servers ...", flush=True)
            resident[system] = js_peers(system, root / system, stack)
    return resident


async def warm_up(
    resident: dict[str, Peers], case: tuple[int, str], args: argparse.Namespace
) -> None:
    """`--warmup` runs of `case` for each system whose peers serve every run, not counted:
    a fresh node process runs its first thousand changes several times slower than later
    ones (its JIT compilers), a server that has run for a while would not."""
    batch, topology = case
    for _ in range(args.warmup):
        for system, peers in resident.items():
            pids = sorted(pid for other in resident.values() for pid in other.pids)
            await settle(pids, args.timeout)
            result = await propagate(peers, topology, args.changes, batch, args)
            print(
                f"  {system:15s} warm-up, {case_name(batch, topology):22s}"
                f" {result['changes_per_second']:,.0f} changes/s (not counted)",
                flush=True,
            )


async def run_case(
    folder: Path,
    resident: dict[str, Peers],
    system: str,
    topology: str,
    batch: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One run of one system, printed. The crdtmds and JavaScript servers serve every run
    (`resident`); each run of the Python repos gets three fresh processes (logs in
    `folder`): a repo kept through many runs stopped answering new connections after a
    few of them. Every peer process, of any system, must be idle before the clock starts."""
    with contextlib.ExitStack() as stack:
        peers = resident[system] if system in resident else repo_peers(folder, stack)
        pids = {*peers.pids, *(pid for other in resident.values() for pid in other.pids)}
        settled = await settle(sorted(pids), args.timeout)
        result = await propagate(peers, topology, args.changes, batch, args)
    result["settle_seconds"] = settled
    print(
        f"  {system:15s} {case_name(batch, topology):22s}"
        f" {result['seconds']:7.3f} s"
        f" ({result['changes_per_second']:,.0f} changes/s;"
        f" the writer itself took {result['write_seconds']:.3f} s;"
        f" this process {result['bench_cpu_ms_per_change']:.3f} ms CPU"
        f" per change, its observers"
        f" {result['observer_cpu_ms_per_change']:.3f}; the 3 peers"
        f" {result['peers_cpu_ms_per_change']:.3f};"
        f" peers idle after {settled:.1f} s)",
        flush=True,
    )
    return result


def report(args: argparse.Namespace, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    systems = list(runs)
    others = systems[1:]
    medians = {
        system: {
            case: median([r["changes_per_second"] for r in results])
            for case, results in by_case.items()
        }
        for system, by_case in runs.items()
    }
    cases = list(medians["crdtmds"])
    ratios = {
        system: {case: ratio(medians["crdtmds"][case], medians[system][case]) for case in cases}
        for system in others
    }
    print_table(
        f"Propagation of {args.changes} changes to 3 peers ({args.writer} writer),"
        f" median changes/s of {args.reps} runs",
        ["case", *systems],
        [[case, *(medians[system][case] for system in systems)] for case in cases],
    )
    print_table(
        "crdtmds / each system, median changes/s (targets: at least)",
        ["case", *(heading for system in others for heading in ratio_headings(system))],
        [
            [case, *(cell for system in others for cell in ratio_cells(system, ratios, case))]
            for case in cases
        ],
    )
    cpu = {
        key: {
            system: {
                case: median([r[f"{key}_cpu_ms_per_change"] for r in results])
                for case, results in by_case.items()
            }
            for system, by_case in runs.items()
        }
        for key in ("bench", "observer", "peers")
    }
    print_table(
        "CPU of the 3 peer processes while timed, median ms per change",
        ["case", *systems],
        [[case, *(cpu["peers"][s][case] for s in systems)] for case in cases],
    )
    print_table(
        f"CPU of this process, median ms per change ({args.observer} observers)",
        ["case", *(f"{s}: {part}" for s in systems for part in ("all", "observers"))],
        [
            [case, *(cpu[key][s][case] for s in systems for key in ("bench", "observer"))]
            for case in cases
        ],
    )
    write_results(
        args.out,
        NAME,
        parameters={k: v for k, v in vars(args).items() if k not in ("repo_child", "dial")},
        results={
            "runs": runs,
            "median_changes_per_second": medians,
            "ratio": ratios,
            "median_bench_cpu_ms_per_change": cpu["bench"],
            "median_observer_cpu_ms_per_change": cpu["observer"],
            "median_peers_cpu_ms_per_change": cpu["peers"],
        },
        targets={"ratio_at_least": {s: TARGET_RATIOS[s] for s in others if s in TARGET_RATIOS}},
    )


def ratio_headings(system: str) -> list[str]:
    if system in TARGET_RATIOS:
        return [f"vs {system}", "target", "verdict"]
    return [f"vs {system}"]


def ratio_cells(system: str, ratios: dict[str, dict[str, float]], case: str) -> list[Any]:
    value = ratios[system][case]
    if system in TARGET_RATIOS:
        target = TARGET_RATIOS[system]
        return [value, target, verdict(value, target, at_least=True)]
    return [value]


def main() -> None:
    args = parse_args()
    if args.repo_child:
        run(lambda: repo_child(args.dial))
        return
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
