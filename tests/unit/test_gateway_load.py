"""The gateway's parts that keep 10,000 desktops cheap: the long-lived objects frozen out of
the cycle collector's scans (router/gateway/heap.py) and the sync round that reads only the
agents a decision touched plus a share of a rolling sweep (router/gateway/sync.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any, cast

import pytest

from router.gateway import heap
from router.gateway.heap import Heap, HeapPolicy
from router.gateway.hub import Hub
from router.gateway.session import Session
from router.gateway.sync import Sync
from router.routing.config import policy_from_settings
from router.settings import Settings, SettingsError


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as the test found it."""
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Any = None


def test_a_settle_frees_young_cyclic_garbage_and_freezes_the_survivors(unfrozen: None) -> None:
    gc.unfreeze()
    a, b = Node(), Node()
    a.other, b.other = b, a  # cyclic garbage once dropped
    del a, b
    kept = Node()
    assert heap.settle() >= 2
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(kept)


def test_a_sweep_frees_garbage_that_was_frozen(unfrozen: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    heap.settle()  # both frozen while alive
    del a, b
    assert heap.sweep() >= 2


def test_a_sweep_waits_for_closed_sockets_and_its_minimum_interval(
        unfrozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = [0]
    keeper = Heap(HeapPolicy(1.0, sweep_after=3, sweep_min_s=0.0), lambda: closed[0])
    sweeps: list[int] = []
    monkeypatch.setattr(heap, "sweep", lambda: sweeps.append(1) or 0)
    keeper.step()
    closed[0] = 2
    keeper.step()
    assert sweeps == []
    closed[0] = 3
    keeper.step()
    assert sweeps == [1]
    keeper.step()  # no socket closed since
    assert sweeps == [1]
    slow = Heap(HeapPolicy(1.0, sweep_after=1, sweep_min_s=3600.0), lambda: 5)
    slow.step()
    assert sweeps == [1]


def test_the_collector_settings_are_checked(tmp_path: Any) -> None:
    with pytest.raises(SettingsError):
        Settings(state_dir=tmp_path, gateway_gc_freeze_s=-1.0).validate()
    with pytest.raises(SettingsError):
        Settings(state_dir=tmp_path, gateway_sync_sweep_s=0.0).validate()
    Settings(state_dir=tmp_path, gateway_gc_freeze_s=0.0).validate()  # 0: CPython's schedule


def _sync(tmp_path: Any, agents: int, interval_s: float, sweep_s: float) -> tuple[Sync, Hub]:
    settings = Settings(state_dir=tmp_path, gateway_console_interval_s=interval_s,
                        gateway_sync_sweep_s=sweep_s)
    hub = Hub(settings)
    for n in range(agents):
        hub.agents[("d", f"a-{n}")].add(cast(Session, object()))
    return Sync(settings, policy_from_settings(settings), cast(Any, None), hub,
                cast(Any, None), lambda: False), hub


def test_a_sync_round_reads_the_touched_agents_and_a_share_of_the_sweep(tmp_path: Any) -> None:
    sync, hub = _sync(tmp_path, agents=100, interval_s=1.0, sweep_s=5.0)
    hub.touch("d", "a-7")
    hub.touch("d", "nobody")  # not connected here: not read
    rounds = [set(sync.due()["d"]) for _ in range(5)]
    assert "a-7" in rounds[0]
    assert "nobody" not in set().union(*rounds)
    assert all(len(r - {"a-7"}) in (19, 20) for r in rounds)  # a fifth of 100 each round
    assert set().union(*rounds) == {f"a-{n}" for n in range(100)}  # all in one sweep
    assert hub.touched == set()


def test_an_agent_gone_before_its_turn_is_not_read(tmp_path: Any) -> None:
    sync, hub = _sync(tmp_path, agents=10, interval_s=1.0, sweep_s=10.0)
    first = sync.due()["d"]
    assert len(first) == 1
    del hub.agents[("d", "a-0")]
    seen = set(first)
    for _ in range(9):
        seen.update(sync.due().get("d", []))
    assert "a-0" not in seen - set(first)
    assert len(seen) in (9, 10)
