"""Foreign errors (Ray, LMDB, pydantic) become ours at the boundary, cause kept."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from runtime import AgentStartError, AgentUnavailable, ConfigError, StateError
from runtime._config import AgentConfig, validated
from runtime._ref import translate_actor_error
from runtime._store import LmdbStore


def test_pydantic_validation_error_becomes_config_error():
    with pytest.raises(ConfigError) as err:
        validated(AgentConfig, {"keep_checkpoints": 0})
    assert err.value.details["errors"][0]["loc"] == "keep_checkpoints"
    assert type(err.value.__cause__).__name__ == "ValidationError"


def test_lmdb_error_becomes_state_error(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "data.mdb").write_bytes(b"this is not an lmdb file" * 1000)
    with pytest.raises(StateError) as err:
        LmdbStore(tmp_path / "env", agent_id="a", map_size=1 << 24, sync=False)
    assert type(err.value.__cause__).__module__.startswith("lmdb")


class _CreationFailed(ActorDiedError):
    def __str__(self):
        return "The actor died because of an error raised in its creation task\nDataDirectoryError: gone"


def test_ray_actor_errors_become_ours():
    assert isinstance(translate_actor_error(ActorUnavailableError("gone for now", b"x" * 16), "a"), AgentUnavailable)
    started = translate_actor_error(_CreationFailed(), "a")
    assert isinstance(started, AgentStartError) and "DataDirectoryError: gone" in str(started)
