"""Deploy and rollback through a supervisor on a real local Ray, under load: nothing lost, nothing twice,
every audit record stamped with the version it ran under, deploys refused without the admin role."""

from __future__ import annotations

import itertools

import pytest

from audit import Forbidden, OperatorKey, SigningKey, read_log
from runtime import System
from supervisors import ChildSpec, SupervisorError, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.agents import Emit, GetItems, Producer, Report, Sink, SinkV2
from tests.sup_agents import FAST, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray
N = 600


def _runs(values: list[str]) -> list[str]:
    return [v for v, _ in itertools.groupby(values)]


def test_deploy_then_rollback_under_load_loses_and_duplicates_nothing(data_dir, refs):
    sink, prod = uid("sink"), uid("prod")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST), children=[
        ChildSpec(id=sink, agent=Sink, init={"delay": 0.005}, config={"ship_interval": 0.2}),
        ChildSpec(id=prod, agent=Producer, config={"max_batch": 20, "window": 5}),
    ])
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    system = System(data_dir)
    producer, receiver = system.lookup(prod), system.lookup(sink)
    v1 = receiver.admin.status()["version"]
    assert producer.ask(Emit(to=sink, start=0, count=N), timeout=30) == N  # staged; flows while we deploy

    wait_for(lambda: receiver.ask(Report(), timeout=30)["count"] >= N // 4, timeout=60)
    deployed = sup.deploy(sink, who="alice@ops", why="v2: reports its version", agent=SinkV2)
    v2 = deployed["version"]
    assert (deployed["previous"], deployed["state"]) == (v1, "running") and v2 != v1
    assert receiver.ask(Report(), timeout=30)["v"] == 2, "the new version answers, with the state kept"
    wait_for(lambda: receiver.ask(Report(), timeout=30)["count"] >= N // 2, timeout=60)

    back = sup.rollback(sink, who="alice@ops", why="v2 misbehaves")
    assert (back["version"], back["previous"]) == (v1, v2)
    assert "v" not in receiver.ask(Report(), timeout=30), "the old behaviour again"
    final = wait_for(lambda: (r := receiver.ask(Report(), timeout=30))["count"] >= N and r, timeout=120)
    assert final == {"count": N, "dups": 0, "out_of_order": 0}
    assert receiver.ask(GetItems(), timeout=30) == list(range(N)), "nothing lost, nothing twice"

    assert [d["version"] for d in sup.child(sink)["deployments"]] == [v1, v2, v1]
    assert [v["hash"] for v in receiver.admin.versions()] == [v1, v2, v1]
    ops = [(e["action"], e["who"]) for e in receiver.admin.operator_log()]
    assert ops == [("deploy", "alice@ops"), ("rollback", "alice@ops")]
    assert [e["kind"] for e in sup.events() if e["kind"] == "deployed"] == ["deployed", "deployed"]

    # Every record in the sink's audit log carries the version it was made under: v1, v2, v1 in turn.
    directory = system.checkpoint_dir / sink / "audit"

    def shipped() -> list[dict] | None:
        if not directory.exists():
            return None
        records = read_log(directory)
        handled = sum(len(r["body"]["messages"]) for r in records if r["kind"] == "requests")
        return records if handled >= N else None

    records = wait_for(shipped, timeout=60)
    assert _runs([r["body"]["version"] for r in records]) == [v1, v2, v1]
    assert [r["body"]["hash"] for r in records if r["kind"] == "manifest"] == [v1, v2, v1]


def test_deploys_need_the_admin_role_and_a_rollback_an_earlier_version(data_dir, refs, tmp_path):
    keys = {name: OperatorKey(SigningKey.generate(name)) for name in ("bob", "root")}
    (tmp_path / "operators.toml").write_text("".join(
        f'[operators.{n}]\nroles = ["{r}"]\nkey = "{keys[n].verifier}"\n' for n, r in (("bob", "operator"),
                                                                                         ("root", "admin"))))
    sink = uid("sink")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(backoff=FAST, operators=str(tmp_path / "operators.toml")),
                          children=[ChildSpec(id=sink, agent=Sink)])
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    with pytest.raises(SupervisorError, match="no earlier version"):
        sup.rollback(sink, who=keys["root"], why="nothing to go back to")
    with pytest.raises(Forbidden):
        sup.deploy(sink, who=keys["bob"], why="operators do not deploy", config={"config_version": "2"})
    deployed = sup.deploy(sink, who=keys["root"], why="v2", config={"config_version": "2"})
    assert System(data_dir).lookup(sink).admin.status()["version"] == deployed["version"]
    [entry] = [e for e in System(data_dir).lookup(sink).admin.operator_log() if e["action"] == "deploy"]
    assert entry["who"] == "root" and entry["auth"].startswith("ed25519:")
    assert sup.rollback(sink, who=keys["root"], why="back", to=deployed["previous"][7:15])["version"] == \
        deployed["previous"]
