"""The gateway bench's topic layout and the Tansu reproduction's keys (load_tests, pure)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2

from load_tests.bench_gateway import domains_by_instance, main
from load_tests.tansu_fetch import keys_for


def partition_of(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(("instances", "partitions"), [(1, 1), (2, 2), (3, 3), (2, 8), (1, 8)])
def test_each_instance_gets_domains_on_the_partitions_it_reads(instances: int,
                                                                partitions: int) -> None:
    layout = domains_by_instance(instances, partitions, 4)
    assert len(layout) == instances
    read = [p for _, parts in layout for p in parts]
    assert sorted(read) == list(range(partitions))  # every partition read, by one instance
    for domains, parts in layout:
        names = domains.split(",")
        assert len(names) == 4
        assert all(partition_of(d, partitions) in parts for d in names)


def test_one_partition_per_instance_puts_all_its_domains_on_one_partition() -> None:
    for domains, parts in domains_by_instance(2, 2, 4):
        assert len(parts) == 1
        assert {partition_of(d, 2) for d in domains.split(",")} == set(parts)


def test_fewer_partitions_than_instances_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--instances", "2", "--partitions", "1"])


def test_keys_spread_evenly_over_the_used_partitions() -> None:
    keys = keys_for(8, 8, 2)
    assert len(set(keys)) == 8
    assert sorted(partition_of(k, 8) for k in keys) == [0, 0, 0, 0, 1, 1, 1, 1]
