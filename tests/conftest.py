import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from dist_utils import RankPool  # noqa: E402

_POOLS = {}


@pytest.fixture(scope="session")
def ranks():
    """``ranks(world_size)`` -> a live RankPool (rebuilt if a test broke it)."""

    def get(world_size: int) -> RankPool:
        pool = _POOLS.get(world_size)
        if pool is None or pool.broken:
            pool = _POOLS[world_size] = RankPool(world_size)
        return pool

    yield get
    for pool in _POOLS.values():
        pool.close()
