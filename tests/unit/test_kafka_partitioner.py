"""router.kafka.KeyHashes: the default partitioner's partitions, each key hashed once."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from router.kafka import KeyHashes


def test_the_same_partitions_as_aiokafkas_default() -> None:
    ours, theirs = KeyHashes(limit=7), DefaultPartitioner()
    keys = [f"bench-{i}".encode() for i in range(20)] + [b"", b"\xff" * 9, "客服".encode()]
    for partitions in ([0], list(range(8)), list(range(3, 15))):
        for _ in range(2):  # hashed, then kept (and forgotten past the limit)
            assert [ours(k, partitions, partitions) for k in keys] == [
                theirs(k, partitions, partitions) for k in keys]


def test_no_key_picks_an_available_partition() -> None:
    assert KeyHashes()(None, [0, 1, 2], [2]) == 2
