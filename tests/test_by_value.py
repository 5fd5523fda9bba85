"""Classes defined in a driver's ``__main__`` reach other processes by value: their tags survive.

Ray pickles such classes with cloudpickle, which rebuilds them in the worker as
empty skeletons and then sets their attributes; class keywords (``name=``,
``version=``) are lost on the way.  These tests unpickle in a fresh process,
as a Ray worker does, without Ray.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

from ray import cloudpickle

DRIVER = textwrap.dedent('''
    from protocols import Message
    from runtime import Agent, handler

    class Add(Message, name="counter.add"):
        n: int = 1

    class Get(Message, name="counter.get", version=3):
        pass

    class Counter(Agent):
        @handler
        def add(self, msg: Add) -> int:
            return msg.n

        @handler
        def get(self, msg: Get) -> int:
            return 0
''')

# The receiving process already has a class whose bare name would give the
# skeleton's default tag ("Get@1"): registering the skeleton under it would clash.
WORKER = textwrap.dedent('''
    import pickle, sys
    from protocols import Message, default_registry

    class Get(Message):
        pass

    loaded = pickle.loads(sys.stdin.buffer.read())
    if len(sys.argv) > 1:  # pass it on once more, as a supervisor does to its children
        from ray import cloudpickle
        sys.stdout.buffer.write(cloudpickle.dumps(loaded))
        raise SystemExit
    Counter, Add, G = loaded
    print(sorted(t for t in default_registry.known() if not t.startswith("garrison.")))  # the runtime's own are there too
    print(G.type_tag(), Add.type_tag())
    print(sorted(c.type_tag() for c in Counter.__handlers__))
    print(default_registry.resolve("counter.get@3", {})[0] is G, default_registry.resolve("counter.add@1", {})[0] is Add)
    print(Add.model_validate({"n": 5}).n)
''')


def _driver_classes():
    module = types.ModuleType("a_driver_script")  # not importable anywhere: pickled by value
    exec(DRIVER, module.__dict__)
    return module.Counter, module.Add, module.Get


def _in_worker(blob: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER, *args], input=blob, capture_output=True, timeout=120)


def _check(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    assert lines == [
        "['Get@1', 'counter.add@1', 'counter.get@3']",
        "counter.get@3 counter.add@1",
        "['counter.add@1', 'counter.get@3']",
        "True True",
        "5",
    ], lines


def test_tags_and_handlers_survive_pickling_by_value():
    _check(_in_worker(cloudpickle.dumps(_driver_classes())))


def test_tags_survive_a_second_hop():
    hop = _in_worker(cloudpickle.dumps(_driver_classes()), "again")
    assert hop.returncode == 0, hop.stderr.decode()
    _check(_in_worker(hop.stdout))


def test_a_class_statement_without_keywords_still_registers_by_its_name():
    from protocols import Message, default_registry

    class PlainByValueProbe(Message):
        pass

    assert PlainByValueProbe.type_tag() == "PlainByValueProbe@1"
    assert default_registry.resolve("PlainByValueProbe@1", {})[0] is PlainByValueProbe
