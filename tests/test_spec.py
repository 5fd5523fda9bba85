"""Host specs and the checks before anything starts: per-node data directories (``{node}``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import ConfigError, DataDirectoryError, System
from runtime._spec import expand_node, local_data_dir, per_node, per_node_root

NODE = "3f9a" * 14  # the shape of a Ray node id: 56 hex digits


def test_expand_node_replaces_every_placeholder_and_keeps_other_braces():
    assert expand_node("/data/{node}/garrison", NODE) == f"/data/{NODE}/garrison"
    assert expand_node("/d/n-{node}/{node}", "ab") == "/d/n-ab/ab"
    assert expand_node("/d/{x}/{node}", "ab") == "/d/{x}/ab"
    assert expand_node("/d/plain", "ab") == "/d/plain"


@pytest.mark.parametrize("bad", ["", "../up", "a/b", "a b", None])
def test_a_node_id_that_is_not_a_plain_token_is_refused(bad):
    with pytest.raises(ConfigError, match="cannot name a directory"):
        expand_node("/d/{node}", bad)


def test_per_node_root_is_the_part_above_the_first_templated_component():
    assert per_node("/data/{node}") and not per_node("/data/node")
    assert per_node_root(Path("/data/{node}/garrison")) == Path("/data")
    assert per_node_root(Path("/data/n-{node}")) == Path("/data")
    assert per_node_root(Path("/data/plain")) == Path("/data/plain")


def test_local_data_dir_creates_this_nodes_directory_only(tmp_path):
    template = str(tmp_path / "nodes" / "{node}" / "state")
    got = local_data_dir(template, node_id="node1")
    assert got == tmp_path / "nodes" / "node1" / "state" and got.is_dir()
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == ["node1"]  # no literal "{node}"
    assert local_data_dir(template, node_id="node2") != got


def test_local_data_dir_of_a_plain_path_creates_nothing(tmp_path):
    with pytest.raises(DataDirectoryError, match="does not exist"):
        local_data_dir(tmp_path / "missing")
    assert local_data_dir(tmp_path) == tmp_path


def test_a_per_node_data_dir_needs_a_shared_checkpoint_dir(tmp_path):
    with pytest.raises(ConfigError, match="give a checkpoint_dir shared by every node"):
        System(tmp_path / "{node}", create=True)
    with pytest.raises(ConfigError, match="must be one directory shared by every node"):
        System(tmp_path / "{node}", checkpoint_dir=tmp_path / "ck-{node}", create=True)
    with pytest.raises(DataDirectoryError, match=r"the part above \{node\}"):
        System(tmp_path / "missing" / "{node}", checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was created, least of all a literal "{node}"


@pytest.mark.ray
def test_an_agent_keeps_its_state_under_its_own_nodes_directory(ray_session, tmp_path, agent_id):
    from .agents import Append, Counter, GetItems

    system = System(tmp_path / "nodes" / "{node}", checkpoint_dir=tmp_path / "ck", create=True)
    try:
        assert system.data_dir == tmp_path / "nodes" / "{node}"  # kept as a template on the driver
        ref = system.spawn(Counter, agent_id)
        ref.ask(Append(item=7))
        assert ref.ask(GetItems()) == [7]
        node = ray_session.get_runtime_context().get_node_id()  # one node: the driver's is the host's
        assert (tmp_path / "nodes" / node / "agents" / agent_id / "state" / "data.mdb").is_file()
        assert [p.name for p in (tmp_path / "nodes").iterdir()] == [node]
    finally:
        system.shutdown()
