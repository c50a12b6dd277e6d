"""The workload an administrator produces: generated policy edits, applied in sessions and
published, one Automerge change per edit and a revision entry per publish."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.credentials import BENCH_ADMIN


@dataclass(slots=True)
class EditGenerator:
    """Realistic policy edits, as (API command, parameters) pairs.

    The mix follows a firewall administrator's day: mostly new hosts, networks, services
    and access rules that use them, plus changes to existing objects and rules. Edits only
    refer to objects this generator created, so they validate in any session that has
    seen this generator's earlier publishes.
    """

    seed: int = 1
    prefix: str = "b"
    rng: random.Random = field(init=False)
    hosts: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}-{self.counter}"

    def _ip(self) -> str:
        n = self.counter
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def next_edit(self) -> tuple[str, dict[str, Any]]:
        roll = self.rng.random()
        if roll < 0.30 or not self.hosts:
            return self.add_host()
        if roll < 0.38:
            name = self._name("net")
            return "add-network", {"name": name, "subnet": self._ip(), "mask-length": 32}
        if roll < 0.45 or not self.services:
            name = self._name("svc")
            self.services.append(name)
            return "add-service-tcp", {"name": name, "port": str(1024 + self.counter % 60000)}
        if roll < 0.75 or not self.rules:
            return self.add_rule()
        if roll < 0.87:
            return "set-host", {
                "name": self.rng.choice(self.hosts),
                "comments": f"edited {self.counter}",
                "color": self.rng.choice(["red", "blue", "orange", "black", "forest green"]),
            }
        return "set-access-rule", {
            "name": self.rng.choice(self.rules),
            "action": self.rng.choice(["Accept", "Drop", "Reject"]),
            "track": self.rng.choice(["None", "Log"]),
            "comments": f"edited {self.counter}",
        }

    def add_host(self) -> tuple[str, dict[str, Any]]:
        name = self._name("host")
        self.hosts.append(name)
        return "add-host", {"name": name, "ipv4-address": self._ip()}

    def add_rule(self, position: str | None = None) -> tuple[str, dict[str, Any]]:
        name = self._name("rule")
        self.rules.append(name)
        params: dict[str, Any] = {
            "name": name,
            "source": self.rng.sample(self.hosts, min(2, len(self.hosts))),
            "destination": [self.rng.choice(self.hosts)] if self.hosts else ["Any"],
            "service": [self.rng.choice(self.services)] if self.services else ["Any"],
            "action": "Accept",
            "track": "Log",
            "position": position or self.rng.choice(["top", "bottom"]),
        }
        return "add-access-rule", params


_OBJECT_COMMANDS = {
    "add-host": ("add", "host"),
    "add-network": ("add", "network"),
    "add-service-tcp": ("add", "service-tcp"),
    "set-host": ("set", "host"),
}


def apply_edit(session: Any, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one generated edit to a `crdtmds.core.session.Session` (one Automerge change)."""
    if command in _OBJECT_COMMANDS:
        verb, obj_type = _OBJECT_COMMANDS[command]
        if verb == "add":
            return session.add_object(obj_type, params)
        return session.set_object(obj_type, params)
    if command == "add-access-rule":
        return session.add_rule(params)
    if command == "set-access-rule":
        return session.set_rule(params)
    raise ValueError(f"no session method for {command}")


def apply_edits(session: Any, generator: EditGenerator, count: int) -> None:
    """Apply `count` generated edits to a session, as one publish's worth."""
    for _ in range(count):
        apply_edit(session, *generator.next_edit())


def domain_name(index: int) -> str:
    """The name of the `index`-th (from 0) domain of a generated workload."""
    return f"domain-{index + 1:03d}"


def domain_generator(index: int, seed: int) -> EditGenerator:
    """The edit generator of the `index`-th domain: its own seed and object names."""
    return EditGenerator(seed=seed * 100_003 + index, prefix=f"d{index + 1}")


def build_domain_documents(
    count: int,
    changes_per_domain: int,
    *,
    edits_per_publish: int,
    seed: int,
) -> dict[str, Any]:
    """Domains made by sessions and publishes in memory (no storage): document id -> doc.

    Each domain gets publishes of `edits_per_publish` generated edits (one change each,
    with its revision entry) until it holds at least `changes_per_domain` changes.
    """
    from crdtmds.core.domain import Domain
    from crdtmds.core.session import Session
    from crdtmds.sync.protocol import new_document_id

    docs: dict[str, Any] = {}
    for index in range(count):
        domain = Domain.create(domain_name(index), new_document_id())
        generator = domain_generator(index, seed)
        session = Session.open(domain, admin=BENCH_ADMIN, server="bench-source")
        made = len(domain.doc.get_changes([]))
        while made < changes_per_domain:
            edits = min(edits_per_publish, max(1, changes_per_domain - made - 1))
            apply_edits(session, generator, edits)
            session.publish_in_memory()
            made = len(domain.doc.get_changes([]))
        docs[domain.document_id] = domain.doc
    return docs


async def publish_edits(
    node: Any,
    domain: str,
    generator: EditGenerator,
    *,
    publishes: int,
    edits_per_publish: int,
) -> int:
    """Make `publishes` publishes of generated edits in one session; returns changes made."""
    session = await node.sessions.open(domain, admin=BENCH_ADMIN)
    before = len(session.domain.doc.get_changes([]))
    for _ in range(publishes):
        apply_edits(session, generator, edits_per_publish)
        await node.sessions.publish(session)
    await node.sessions.close(session)
    return len(session.domain.doc.get_changes([])) - before


async def populate_domains(
    node: Any,
    count: int,
    *,
    publishes: int,
    edits_per_publish: int,
    seed: int,
    progress: bool = True,
) -> dict[str, int]:
    """Create `count` domains on an in-process node, each filled by published edits.

    Returns the number of Automerge changes per domain name.
    """
    made: dict[str, int] = {}
    for index in range(count):
        name = domain_name(index)
        await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
        made[name] = await publish_edits(
            node,
            name,
            domain_generator(index, seed),
            publishes=publishes,
            edits_per_publish=edits_per_publish,
        )
        if progress and (index + 1) % 10 == 0:
            print(f"  {index + 1}/{count} domains built", flush=True)
    return made
