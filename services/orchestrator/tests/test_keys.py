"""Key names: unchanged on one Redis; in a Redis Cluster every key a script or transaction
touches together shares one hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from podcrew_orchestrator.keys import Keys, is_run_id, keys_for


def test_one_redis_keeps_the_names_podcrew_has_always_used() -> None:
    keys = keys_for("podcrew", 1, cluster=False)
    run_id = keys.new_run_id()
    assert is_run_id(run_id)
    assert keys.queue == "podcrew:runs" and keys.finished == "podcrew:runs:finished"
    assert keys.run(run_id) == f"podcrew:run:{run_id}"
    assert keys.events(run_id) == f"podcrew:run:{run_id}:events"
    assert keys.active("acme") == "podcrew:tenant:acme:active"
    assert keys.webhooks == "podcrew:webhooks"


def test_more_than_one_partition_needs_a_cluster() -> None:
    with pytest.raises(ValueError, match="Redis Cluster"):
        keys_for("podcrew", 4, cluster=False)
    with pytest.raises(ValueError, match="1 to 256"):
        Keys("podcrew", 257, tagged=True)


def test_in_a_cluster_a_run_lives_in_its_partition_slot_and_a_tenant_in_its_own() -> None:
    keys = keys_for("podcrew", 8, cluster=True)
    runs = [keys.new_run_id() for _ in range(200)]
    assert all(is_run_id(run_id) for run_id in runs)
    assert {keys.partition_of(run_id) for run_id in runs} == set(range(8))
    for run_id in runs:
        partition = keys.partition_of(run_id)
        together = [
            keys.run(run_id),
            keys.events(run_id),
            keys.feedback(run_id),
            keys.evaluation(run_id),
            keys.queue_of(partition),
            keys.dead_letter_of(partition),
            keys.finished_of(partition),
            keys.webhooks_of(partition),
            keys.hub_wake("reader", partition),
        ]
        assert len({key_slot(key.encode()) for key in together}) == 1, together
    tenant = [
        keys.rate("acme"),
        keys.active("acme"),
        keys.idempotency("acme", "k"),
        keys.coalesce("acme", "d"),
        keys.semantic_cache("acme"),
        keys.thread("acme", "t"),
    ]
    assert len({key_slot(key.encode()) for key in tenant}) == 1
    # The partitions are different slots, so they can be spread over the shards.
    assert len({key_slot(stream.encode()) for stream in keys.queues}) == 8
