"""Foreign errors (Ray, LMDB, pydantic) become ours at the boundary, cause kept."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from ray.exceptions import GetTimeoutError

from runtime import (
    AgentNotRunning,
    AgentStartError,
    AgentUnavailable,
    AskTimeout,
    ConfigError,
    DataDirectoryError,
    InternalError,
    StateError,
)
from runtime._boundary import guarded
from runtime._config import AgentConfig, validated
from runtime._boundary import from_ray
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


def _creation_failed() -> ActorDiedError:
    """Ray's error for an actor whose constructor raised, built as Ray builds it."""
    task = RayTaskError("AgentHost.__init__", "Traceback (most recent call last):\nDataDirectoryError: gone",
                        DataDirectoryError("gone"))
    return ActorDiedError.from_task_error(task)


def test_ray_actor_errors_become_ours_by_type():
    assert isinstance(from_ray(ActorUnavailableError("gone for now", b"x" * 16), "a"), AgentUnavailable)
    # An actor death whose text mentions a creation task is still only a death: the type decides.
    assert isinstance(from_ray(ActorDiedError(), "a"), AgentUnavailable)
    started = from_ray(_creation_failed(), "a")
    assert isinstance(started, AgentStartError) and "DataDirectoryError: gone" in str(started)
    assert isinstance(from_ray(GetTimeoutError("slow"), "a"), AskTimeout)


def test_a_remote_garrison_error_comes_back_as_itself():
    remote = RayTaskError("AgentHost.status", "tb", AgentNotRunning("halted", state="halted"))
    wrapped = remote.as_instanceof_cause()  # what ray.get raises: a subclass of both
    mine = from_ray(wrapped, "a")
    assert type(mine) is AgentNotRunning and mine.details == {"state": "halted"}


def test_anything_else_is_an_internal_error_never_raw():
    err = from_ray(RayTaskError("AgentHost.status", "tb", KeyError("x")), "a", what="status")
    assert isinstance(err, InternalError) and err.details["exception"] == "KeyError"


def test_guarded_lets_only_garrison_errors_out():
    class Host:
        @guarded
        def boom(self):
            raise ValueError("bad")

        @guarded
        def refuse(self):
            raise AgentNotRunning("no", state="halted")

    with pytest.raises(InternalError, match="ValueError: bad"):
        Host().boom()
    with pytest.raises(AgentNotRunning):
        Host().refuse()


def test_one_root_catches_protocol_runtime_and_supervisor_errors():
    import protocols
    import supervisors
    from runtime import GarrisonError

    assert protocols.GarrisonError is GarrisonError is supervisors.GarrisonError
    for cls in (protocols.ProtocolError, protocols.UnknownMessageType, StateError, supervisors.SupervisorError):
        assert issubclass(cls, GarrisonError)
