"""The local server's behavioural tests, run again with the objects in Redis (issue #20).

The test functions are imported from their modules; the ``manager`` and ``m`` fixtures here
give them a manager on Redis instead of one on procshare's server, under fork and spawn
(``ctx``). What Redis cannot do (registered classes, live iterators...) is not imported:
docs/redis.md's table says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from tests.conformance.test_fidelity import *  # noqa: F403
from tests.conformance.test_oracle import *  # noqa: F403
from tests.conformance.test_pipeline_atomic import *  # noqa: F403
from tests.conformance.test_proxies import *  # noqa: F403
from tests.system.test_cache import *  # noqa: F403
from tests.system.test_deaths import *  # noqa: F403
from tests.system.test_interrupted import *  # noqa: F403
from tests.system.test_named import *  # noqa: F403
from tests.system.test_watch import *  # noqa: F403

# What Redis does not offer (docs/redis.md): a class run in the server; a queue or lock in a
# pipeline.
del test_pool_in_the_server  # noqa: F821
del test_custom_methods_are_refused_in_a_pipeline  # noqa: F821
# (it counts the server's calls: test_redis.py counts Redis's)
del test_a_cached_proxy_answers_locally_and_stays_current  # noqa: F821
del test_queue_bulk_put_in_a_pipeline  # noqa: F821
del test_a_pipeline_returns_results_in_order_with_errors_per_call  # noqa: F821
# (who reads the local server's push connection: Redis's watches are read by their thread)
del test_a_consumer_waiting_reads_its_changes_itself  # noqa: F821
del test_a_forked_child_does_not_take_its_parents_changes  # noqa: F821
del test_a_wake_byte_left_behind_does_not_make_the_push_thread_spin  # noqa: F821
del test_a_get_interrupted_while_it_hands_changes_on_ends_the_watch_loudly  # noqa: F821
# (100 trials of a kill that Redis notices after session_ttl: test_redis.py kills holders)
del test_kill_the_lock_holder_again_and_again  # noqa: F821


@pytest.fixture
def manager(ctx: Any, redis_server: str) -> Iterator[procshare.SyncManager]:
    m = procshare.SyncManager(address=f"{redis_server}?session_ttl=1&release_delay=0.2")
    m.start()
    yield m
    m.shutdown()


@pytest.fixture
def m(redis_server: str) -> Iterator[procshare.SyncManager]:
    m = procshare.SyncManager(address=f"{redis_server}?session_ttl=1&release_delay=0.2")
    m.start()
    yield m
    m.shutdown()
