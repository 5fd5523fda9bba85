"""Bad input and bad setup give typed errors; the agent keeps running and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import msgpack
import pytest

from protocols import (
    DeadlineExpired,
    EncodingError,
    MessageValidationError,
    PayloadTooLarge,
    UnknownMessageType,
    encode_envelope,
    make_envelope,
)
from runtime import (
    AgentAlreadyRunning,
    AgentNotFound,
    AgentStartError,
    AskTimeout,
    ConfigError,
    DataDirectoryError,
    HandlerError,
    NoHandler,
    System,
)

from .agents import Add, Append, Boom, Counter, GetCount, GetItems, Sleep, Unhandled

pytestmark = pytest.mark.ray


def raw_envelope(agent_id, tag, body, **kw):
    env = make_envelope(Add(n=1), agent_id, **kw)
    env.type = tag
    env.body = body
    return encode_envelope(env)


def test_invalid_body_gets_field_paths_and_nothing_is_lost(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    for i in range(5):
        ref.ask(Append(item=i))
    with pytest.raises(MessageValidationError) as err:
        ref.send_raw(raw_envelope(agent_id, "test.append@1", {"item": "not-a-number"}))
    assert err.value.details["errors"][0]["loc"] == "item"
    with pytest.raises(MessageValidationError) as err:
        ref.send_raw(raw_envelope(agent_id, "test.append@1", {}))
    assert err.value.details["errors"][0]["type"] == "missing"
    assert ref.ask(GetItems()) == [0, 1, 2, 3, 4]


def test_unknown_type_and_version_name_what_is_known(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=2))
    with pytest.raises(UnknownMessageType) as err:
        ref.send_raw(raw_envelope(agent_id, "no.such@1", {}))
    assert "test.add@1" in err.value.details["known"]
    with pytest.raises(UnknownMessageType, match="test.add@7"):
        ref.send_raw(raw_envelope(agent_id, "test.add@7", {"n": 1}))
    with pytest.raises(NoHandler, match="test.unhandled@1"):
        ref.ask(Unhandled())
    assert ref.ask(GetCount()) == 2


def test_malformed_bytes_oversize_and_expired_are_refused(system, agent_id):
    ref = system.spawn(Counter, agent_id, config={"max_message_bytes": 4096})
    ref.ask(Add(n=1))
    with pytest.raises(EncodingError):
        ref.send_raw(os.urandom(64))
    with pytest.raises(EncodingError):
        ref.send_raw(raw_envelope(agent_id, "test.add@1", {"n": 1})[:-3])
    with pytest.raises(EncodingError, match="15-element"):
        ref.send_raw(msgpack.packb([1, 2, 3]))
    with pytest.raises(PayloadTooLarge):
        ref.send_raw(raw_envelope(agent_id, "test.add@1", {"n": 1, "pad": "x" * 5000}))
    with pytest.raises(DeadlineExpired) as err:
        ref.send_raw(raw_envelope(agent_id, "test.add@1", {"n": 5}, deadline=1.0))
    assert "before handling" in err.value.details["where"]
    assert ref.ask(GetCount()) == 1, "nothing refused had an effect"
    assert 'outcome="rejected_EncodingError"' in ref.admin.metrics()


def test_handler_error_rolls_back_and_agent_goes_on(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=3))
    with pytest.raises(HandlerError, match="RuntimeError: boom"):
        ref.ask(Boom())
    assert ref.ask(GetCount()) == 3


def test_ask_timeout_is_typed_and_does_not_hang(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    with pytest.raises(AskTimeout) as err:
        ref.ask(Sleep(seconds=5), timeout=0.3)
    assert isinstance(err.value, TimeoutError)
    assert err.value.details["where"] == "caller"


def test_missing_and_unwritable_data_directory(ray_session, tmp_path):
    with pytest.raises(DataDirectoryError, match="does not exist"):
        System(tmp_path / "missing")
    with pytest.raises(DataDirectoryError, match="not writable"):
        System("/proc")  # a directory no uid can create files in
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(DataDirectoryError, match="not writable"):
            System(ro)


def test_data_directory_removed_under_a_running_system(ray_session, tmp_path, agent_id):
    data = tmp_path / "d"
    system = System(data, create=True)
    try:
        ckpt_dir = system.checkpoint_dir
        system.data_dir = tmp_path / "vanished"  # as if the mount disappeared
        with pytest.raises(AgentStartError, match="does not exist"):
            system.spawn(Counter, agent_id)
        assert ckpt_dir.exists()
    finally:
        system.shutdown()


def test_bad_config_and_ids_fail_before_anything_starts(system):
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        system.spawn(Counter, "ok-id", config={"checkpoint_interval": -1})
    with pytest.raises(ConfigError, match="no_such_option"):
        system.spawn(Counter, "ok-id", config={"no_such_option": 1})
    with pytest.raises(ConfigError, match="agent id"):
        system.spawn(Counter, "../escape")
    assert "ok-id" not in system.agents()


def test_one_live_instance_per_id(system, agent_id):
    system.spawn(Counter, agent_id)
    with pytest.raises(AgentAlreadyRunning):
        system.spawn(Counter, agent_id)


def test_lookup_from_another_driver(system, agent_id, ray_session):
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=41))
    address = ray_session.get_runtime_context().gcs_address
    script = textwrap.dedent(
        f"""
        from runtime import System
        from tests.agents import Add
        with System(address={address!r}) as s:
            print(s.lookup({agent_id!r}).ask(Add(n=1), timeout=30))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ}, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"
    with pytest.raises(AgentNotFound):
        system.lookup("never-spawned")
