from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis import RedisServer, available, running_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session (Debian's `redis-server`; scripts/install-redis.sh)."""
    if not available():
        pytest.skip("redis-server is not installed (run scripts/install-redis.sh)")
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for each test."""
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    return redis_server.url
