"""Agent versions (``runtime._version``): the manifest, its hash, and where it is stamped.

Pure logic and a real AgentCore on real LMDB files, in process (no Ray).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from audit import read_log
from protocols import Message
from runtime import Agent, AgentConfig, handler
from runtime._core import AgentCore
from runtime._spec import HostSpec
from runtime._version import agent_manifest, code_digest, version_hash

from .agents import Add, Counter, GetCount
from .test_audit_trail import _ask

ROOT = Path(__file__).resolve().parent.parent


class Ask(Message, name="vtest.ask"):
    text: str


class Triage(Agent):
    prompts = {"system": "You sort tickets."}
    models = {"triage": "local-model-1"}

    @handler
    def ask(self, msg: Ask) -> str:
        return "refund" if msg.text in {"refund", "money back", "return"} else "answer"  # a frozenset constant


class TriageV2(Triage):
    @handler
    def ask(self, msg: Ask) -> str:
        return "refund" if "refund" in msg.text else "answer"


def _hash_in_a_fresh_process(seed: str) -> str:
    code = ("from tests.test_version import Triage; from runtime._version import code_digest; "
            "print(code_digest(Triage, Triage.tools.values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
    return out.stdout.strip()


def test_the_code_hash_is_the_same_in_every_process_and_changes_with_the_code():
    here = code_digest(Triage, Triage.tools.values())
    assert _hash_in_a_fresh_process("1") == _hash_in_a_fresh_process("2") == here
    assert code_digest(TriageV2) != here


def test_the_manifest_names_what_a_version_is_made_of_and_its_hash_follows_each_part():
    base = agent_manifest("tests.test_version.Triage", Triage, AgentConfig())
    assert base["prompts"] == {"system": "You sort tickets."} and base["models"] == {"triage": "local-model-1"}
    assert base["class"] == "tests.test_version.Triage" and base["risk_policy"] == "1"
    assert json.loads(json.dumps(base)) == base, "plain data"
    digest = version_hash(base)
    assert digest.startswith("sha256:") and version_hash(dict(base)) == digest
    assert version_hash(agent_manifest("tests.test_version.Triage", Triage, AgentConfig(grants=("x.y",)))) != digest
    assert version_hash({**base, "prompts": {"system": "You sort tickets!"}}) != digest
    assert version_hash(agent_manifest("tests.test_version.TriageV2", TriageV2, AgentConfig())) != digest


def _core(tmp_path, cls=Counter, **config) -> AgentCore:
    for d in ("node", "ck"):
        (tmp_path / d).mkdir(exist_ok=True)
    core = AgentCore(HostSpec("c-1", cls, str(tmp_path / "node"), str(tmp_path / "ck"), config=AgentConfig(**config)))
    core.ensure_started()
    return core


def test_a_version_is_recorded_when_it_changes_and_stamped_on_records_and_checkpoints(tmp_path):
    core = _core(tmp_path)
    first = core.status()["version"]
    _ask(core, Add(n=1))
    core.stop()
    core = _core(tmp_path)  # the same version again: not recorded again
    assert core.status()["version"] == first
    _ask(core, Add(n=2))
    core.stop()
    core = _core(tmp_path, config_version="2")  # a new config: a new version
    second = core.status()["version"]
    assert second != first
    assert _ask(core, GetCount())[0] == 3, "the state is kept across versions"
    manifest = core.checkpoint(force=True)
    assert manifest["version"] == second
    assert [(v["hash"], v["incarnation"]) for v in core.audit.records("manifest", limit=0)] == [(first, 1), (second, 3)]
    core.stop()
    records = read_log(tmp_path / "ck" / "c-1" / "audit", 0, None)
    stamped = [(r["kind"], r["body"]["version"]) for r in records]
    # Each stop stored the transitions of its Add as a segment, recorded under the version that made it.
    assert stamped == [("manifest", first), ("request", first), ("segment", first), ("request", first),
                       ("segment", first), ("manifest", second), ("request", second)], stamped
    assert records[5]["body"]["manifest"]["config_version"] == "2"
