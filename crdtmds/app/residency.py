"""Which domains a server keeps loaded: least recently used first out, past a count
(`--max-loaded-domains`) or an estimate of memory (`--memory-budget`), never one that is
busy (a session open on it, a sync with it in flight, changes not yet on disk).

Pure bookkeeping: `Residency` orders document ids by use and picks the ones to unload;
`crdtmds.app.documents.Documents` loads and unloads them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crdtmds.config import MAX_LOADED_DOMAINS_DEFAULT, MEMORY_BUDGET_DEFAULT, Limits

BASE_DOMAIN_MEMORY = 32 * 1024
"""What a small loaded domain costs in RSS (document, view, indexes): about 23 KiB
measured with 1,000 small domains (bench/domains_scale.py)."""
MEMORY_PER_STORED_BYTE = 24
"""What a stored byte costs once loaded: a rough estimate (Automerge's compressed
columns expand as they load), not measured per domain shape."""


def estimated_memory(stored_bytes: int) -> int:
    return BASE_DOMAIN_MEMORY + MEMORY_PER_STORED_BYTE * stored_bytes


@dataclass(frozen=True, slots=True)
class ResidencyLimits:
    max_loaded: int = MAX_LOADED_DOMAINS_DEFAULT
    memory_budget: int = MEMORY_BUDGET_DEFAULT * 1024 * 1024
    """Bytes, as `estimated_memory` counts them."""

    @classmethod
    def of(cls, limits: Limits) -> ResidencyLimits:
        return cls(limits.max_loaded_domains, limits.memory_budget * 1024 * 1024)


class Residency:
    """Loaded document ids in order of use, with each one's estimated memory."""

    def __init__(self, limits: ResidencyLimits | None = None) -> None:
        self.limits = limits or ResidencyLimits()
        self._memory: OrderedDict[str, int] = OrderedDict()
        """Estimated bytes per loaded document id, least recently used first."""
        self._busy: list[Callable[[str], bool]] = []

    def pin_while(self, busy: Callable[[str], bool]) -> None:
        """Never unload a document for which `busy(document_id)` is true."""
        self._busy.append(busy)

    def is_busy(self, document_id: str) -> bool:
        return any(busy(document_id) for busy in self._busy)

    def loaded(self, document_id: str, stored_bytes: int) -> None:
        self._memory[document_id] = estimated_memory(stored_bytes)

    def used(self, document_id: str) -> None:
        if document_id in self._memory:
            self._memory.move_to_end(document_id)

    def forget(self, document_id: str) -> None:
        self._memory.pop(document_id, None)

    def __len__(self) -> int:
        return len(self._memory)

    @property
    def memory(self) -> int:
        return sum(self._memory.values())

    def victims(self, keep: str | None = None) -> list[str]:
        """The documents to unload to be within the limits, least recently used first;
        busy ones and `keep` are passed over (the limits may then stay exceeded)."""
        count, memory = len(self._memory), self.memory
        chosen: list[str] = []
        for document_id, cost in self._memory.items():
            if count <= self.limits.max_loaded and memory <= self.limits.memory_budget:
                break
            if document_id == keep or self.is_busy(document_id):
                continue
            chosen.append(document_id)
            count, memory = count - 1, memory - cost
        return chosen
