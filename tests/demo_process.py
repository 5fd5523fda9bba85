"""``garrison demo --dashboard`` in a process of its own, its output read line by line as it comes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path


class DashboardDemo:
    """The demo with Ray's dashboard, started in ``tmp_path`` (its own Ray; ``RAY_ADDRESS`` dropped)."""

    def __init__(self, tmp_path: Path) -> None:
        garrison = Path(sys.executable).with_name("garrison")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.proc = subprocess.Popen(
            [str(garrison), "demo", "--dashboard", "--tickets", "2", "--data-dir", str(tmp_path / "d")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(line) for line in self.proc.stdout], daemon=True).start()
        self.seen: list[str] = []

    def until(self, pattern: str, timeout: float = 180) -> re.Match:
        """The first line from here on matching ``pattern``; AssertionError with the output after ``timeout`` s quiet."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got:\n" + self.output()) from None
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found

    def up(self) -> str:
        """Wait until the run is done and the agents are held up for the dashboard; its URL."""
        url = self.until(r"Ray's dashboard: (http://\S+)").group(1)
        self.until(r"the agents stay up for the dashboard")
        return url

    def output(self) -> str:
        return "".join(self.seen)

    def interrupt(self, timeout: float = 120) -> int:
        """Ctrl-C, as a person stops it; its exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """A test's cleanup: stop it if it still runs, by Ctrl-C (its Ray goes down with it), else killed."""
        if self.proc.poll() is None:
            try:
                self.interrupt()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
