"""``garrison demo --dashboard``: the dashboard answers, a real headless Chromium lists the demo's agents by id on
it, and Ctrl-C stops the demo.

The demo runs in a process of its own (its own Ray, about twenty actors); Debian's ``chromium`` (``.ci/run`` installs it) is driven
over the Chrome DevTools Protocol (aiohttp, which Ray brings, speaks its
websocket): Ray's token goes in as the cookie the dashboard's login sets
(``ray get-auth-token`` prints it), the page opens the actors view, and its
rendered text (turning the table's pages) must name the agents.  Without Chromium the rest is
checked and the test then skips, saying what it did not look at.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import _free_port
from .demo_process import DashboardDemo
from .waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AGENTS = ("payments", "approvals", "support-desk", "support-draft-queue")
#: A click on the actors table's page N button (MUI's pagination labels each "Go to page N"); page 1 after the last.
TURN_PAGE = """(() => { const b = document.querySelector('button[aria-label="Go to page N"]')
                      || document.querySelector('button[aria-label="Go to page 1"]'); if (b) b.click(); })()"""


class Browser:
    """One headless Chromium page, driven over the DevTools Protocol."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Browser:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ws_url, max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        await self._session.close()

    async def call(self, method: str, **params: object) -> dict:
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = json.loads((await self._ws.receive()).data)
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                return msg.get("result", {})

    async def text(self) -> str:
        got = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                              returnByValue=True)
        return got["result"].get("value", "")


def test_garrison_demo_dashboard_serves_lists_the_agents_in_headless_chromium_and_stops_on_ctrl_c(tmp_path):
    demo = DashboardDemo(tmp_path)
    try:
        url = demo.up()
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                status = reply.status
        except urllib.error.HTTPError as exc:  # token authentication: it answers, asking for the token
            status = exc.code
        assert status in (200, 401, 403), status
        assert "every ticket through each stage exactly once" in demo.output(), demo.output()
        if CHROMIUM is not None:
            _the_browser_lists_the_agents(url, tmp_path)
        assert demo.interrupt() == 0, demo.output()
    finally:
        demo.close()
    if CHROMIUM is None:
        pytest.skip("the dashboard answered and Ctrl-C stopped the demo; its page in a browser was not looked at: "
                    "Debian's chromium package is not installed here (apt-get install chromium; .ci/run installs it)")


def _the_browser_lists_the_agents(url: str, tmp_path: Path) -> None:
    port = _free_port()
    browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        token = subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token"], capture_output=True,
                               text=True, timeout=60, check=True).stdout.strip()

        def page_ws() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                    pages = [t for t in json.load(reply) if t.get("type") == "page"]
            except OSError:
                return None
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        ws_url = wait_for(page_ws, timeout=60, every=0.2)

        async def look() -> str:
            async with Browser(ws_url) as page:
                await page.call("Network.enable")
                await page.call("Network.setCookie", name="ray-authentication-token", value=token, url=url)
                await page.call("Page.navigate", url=f"{url}/#/actors")
                seen = ""
                for attempt in range(600):  # the page renders from the state API; up to a minute
                    seen += await page.text()
                    if all(agent in seen for agent in AGENTS):
                        return seen
                    # The table shows a page of actors at a time (the demo has about twenty): turn the
                    # pages as a person would, by the pagination's buttons, gathering what each showed.
                    await page.call("Runtime.evaluate", expression=TURN_PAGE.replace("N", str(2 + attempt % 3)))
                    await asyncio.sleep(0.1)
                return seen

        text = asyncio.run(look())
        missing = [agent for agent in AGENTS if agent not in text]
        assert not missing, f"not listed: {missing}; the page said:\n{text[:3000]}"
        assert "AgentHost" in text, "each agent is an AgentHost actor"
    finally:
        browser.kill()
        browser.wait()
