"""Which loaded domains are unloaded: least recently used first, past the count or the
memory budget, never a busy one."""

from __future__ import annotations

from crdtmds.app.residency import Residency, ResidencyLimits, estimated_memory


def test_the_least_recently_used_go_first_and_busy_ones_never() -> None:
    residency = Residency(ResidencyLimits(max_loaded=2))
    busy = {"b"}
    residency.pin_while(busy.__contains__)
    for document_id in ("a", "b", "c", "d"):
        residency.loaded(document_id, 0)
    residency.used("a")  # now c is the least recently used that is not busy
    assert residency.victims(keep="d") == ["c", "a"]
    busy.clear()
    assert residency.victims(keep="d") == ["b", "c"]


def test_the_memory_budget_unloads_as_the_count_does() -> None:
    big = estimated_memory(1_000_000)
    residency = Residency(ResidencyLimits(max_loaded=100, memory_budget=big + 1))
    residency.loaded("large", 1_000_000)
    residency.loaded("small", 0)
    assert residency.victims(keep="small") == ["large"]
    assert residency.victims(keep="large") == ["small"]  # the one in use stays
