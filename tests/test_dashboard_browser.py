"""Ray's dashboard in a real headless Chromium lists the demo's agents by id.

``garrison demo --dashboard`` runs in a process of its own (its own Ray, a
handful of actors); Debian's ``chromium`` (``.ci/run`` installs it) is driven
over the Chrome DevTools Protocol (aiohttp, which Ray brings, speaks its
websocket): Ray's token goes in as the cookie the dashboard's login sets
(``ray get-auth-token`` prints it), the page opens the actors view, and its
rendered text must name every agent.  Skipped, saying why, without Chromium.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .conftest import _free_port
from .demo_process import DashboardDemo
from .waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AGENTS = ("intake", "gather", "draft", "review", "approvals")


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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed here "
                                              "(apt-get install chromium; .ci/run installs it)")
def test_the_dashboard_in_headless_chromium_lists_the_demos_agents_by_id(tmp_path):
    demo = DashboardDemo(tmp_path)
    url = demo.up()
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
                text = ""
                for _ in range(600):  # the page renders from the state API; up to a minute
                    text = await page.text()
                    if all(agent in text for agent in AGENTS):
                        return text
                    await asyncio.sleep(0.1)
                return text

        text = asyncio.run(look())
        missing = [agent for agent in AGENTS if agent not in text]
        assert not missing, f"not listed: {missing}; the page said:\n{text[:3000]}"
        assert "AgentHost" in text, "each agent is an AgentHost actor"
    finally:
        browser.kill()
        browser.wait()
        demo.close()
