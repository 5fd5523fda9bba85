"""MCP servers' tools as governed actions (optional extra: ``pip install 'garrison[mcp]'``).

An :class:`McpServer` names a server and how to reach it: a command run as a
subprocess speaking MCP over stdio, or the URL of a streamable HTTP server.
:func:`mcp_actions` lists its tools and turns each one the config names into
an action class and a tool, ready for an agent's ``tools``::

    shop = McpServer("shop", command=["python", "shop_server.py"])
    # or: McpServer("shop", url="http://127.0.0.1:8000/mcp")

    class Clerk(Agent):
        tools = mcp_actions(shop, {
            "lookup_order": {"capability": "shop.read", "risk": "low", "idempotent": True},
            "refund": {"capability": "payments.refund", "risk": "high", "cost": 1.0},
        })

        @handler
        async def ticket(self, msg: Ticket) -> dict:
            action = action_for(self.tools, "mcp.shop.lookup_order")(arguments={"order": msg.order})
            return (await self.act(action)).model_dump(mode="json")

Deny by default: a tool the server lists but the config does not name is not
exposed (no action, no tool); a config naming a tool the server does not
list is a :class:`PolicyError`.  Per tool, the config sets ``capability``
and ``risk`` (required, as on any action: a risk name or a function of the
action), and optionally ``idempotent`` (False), ``cost`` (0.0, the estimate;
MCP reports no cost, so it is also the actual), ``error_results``
(``"failure"``, the default: an ``isError`` result counts against the
breakers; ``"business"``: it is a declared business outcome that does not),
``name`` (the action's name, default ``mcp.<server>.<tool>``) and
``version`` (1).

Each action class is made at run time, registered under its name like any
message, and has one field, ``arguments`` (a dict, the tool's input; the
server validates it against its ``input_schema``, which the class keeps).
The tool answers ``{"text", "content", "structured"}``: the text blocks
joined, every content block as data, and the structured content.

Sessions: one per server per event loop (each agent host runs async tools
on its own loop thread), opened on the first call and kept; a session whose
connection dropped opens again on the next call.  A stdio server therefore
runs as long as the agent's loop, or until :meth:`McpServer.aclose` (an
agent's async ``on_stop`` is the place) or :meth:`McpServer.close`.
:func:`mcp_actions` lists the tools once with a session of its own, closed
before it returns: about the start-up time of the server process, paid in
every process that defines the agent class (a Ray worker importing its
module too).

Errors are translated here, the original kept as ``__cause__``:

=====================================================  =====================  ==============================
mcp                                                    raised                 retryable
=====================================================  =====================  ==============================
cannot open the session (spawn, connect, handshake)    ``ToolUnavailable``    yes
connection lost or timed out during the call           ``ToolUnavailable``    only if the action is idempotent
any other ``MCPError`` (unknown tool, bad params...)   ``ToolRejected``       no
a result with ``isError``                              ``ToolErrorResult``    no
=====================================================  =====================  ==============================

A call lost in flight may have taken effect: that is why it is retryable
only for an idempotent action.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from ._action import Action
from ._mcp_session import Session
from ._per_loop import PerLoop
from ._tool import Result
from .exceptions import PolicyError, ToolErrorResult, ToolRejected, ToolUnavailable

__all__ = ["McpAction", "McpServer", "McpTool", "McpToolInfo", "action_for", "mcp_actions"]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SETTINGS = {"capability", "risk", "idempotent", "cost", "error_results", "name", "version"}


@dataclass(frozen=True)
class McpToolInfo:
    """A tool as the server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


class McpServer:
    """An MCP server: a ``command`` over stdio or a streamable HTTP ``url``, with a session per event loop.

    ``name`` (letters, digits, ``_``, ``-``) names its actions
    (``mcp.<name>.<tool>``).  ``timeout`` bounds opening a session and each
    request.  Picklable as its settings: sessions stay where they were opened.
    """

    def __init__(self, name: str, *, command: list[str] | None = None, url: str | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 30.0) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PolicyError(f"McpServer name {name!r} must be letters, digits, '_' or '-'")
        if (command is None) == (url is None):
            raise PolicyError(f"McpServer {name!r}: give exactly one of command=[...] (stdio) or url=... (HTTP)")
        if command is not None and (not command or not all(isinstance(c, str) for c in command)):
            raise PolicyError(f"McpServer {name!r}: command must be a non-empty list of strings, got {command!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise PolicyError(f"McpServer {name!r}: timeout must be > 0 seconds, got {timeout!r}")
        self.name = name
        self.command = None if command is None else list(command)
        self.url = url
        self.env = env
        self.cwd = cwd
        self.timeout = float(timeout)
        self._sessions: PerLoop[Session] = PerLoop(lambda: Session(self._target(), self.timeout))

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "url": self.url, "env": self.env, "cwd": self.cwd,
                "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"McpServer({self.name!r}, {'command=' + repr(self.command) if self.command else 'url=' + repr(self.url)})"

    def _target(self) -> Any:
        if self.url is not None:
            return self.url
        from mcp import StdioServerParameters

        assert self.command is not None
        return StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env, cwd=self.cwd)

    # -- listing -----------------------------------------------------------------------

    async def alist_tools(self) -> list[McpToolInfo]:
        """The server's tools, every page, through this loop's session."""
        client = await self._client()
        tools, cursor = [], None
        while True:
            try:
                page = await client.list_tools(cursor=cursor)
            except Exception as exc:
                raise _translate(self, "tools/list", exc, in_flight_retryable=True) from exc
            tools += [McpToolInfo(t.name, t.description or "", dict(t.input_schema)) for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                return tools

    def list_tools(self) -> list[McpToolInfo]:
        """The server's tools, from synchronous code: a session of its own on a thread, closed after."""

        async def once() -> list[McpToolInfo]:
            try:
                return await self.alist_tools()
            finally:
                await self.aclose()

        return _run_in_thread(once)

    # -- calling -----------------------------------------------------------------------

    async def call_tool(self, tool: str, arguments: dict[str, Any], *, idempotent: bool = False) -> Any:
        """The ``CallToolResult`` of ``tool``; our errors for the SDK's (module docstring)."""
        client = await self._client()
        try:
            return await client.call_tool(tool, arguments)
        except Exception as exc:
            error = _translate(self, tool, exc, in_flight_retryable=idempotent)
            if isinstance(error, ToolUnavailable):
                await self.aclose()  # the connection is suspect: the next call opens a new one
            raise error from exc

    async def _client(self) -> Any:
        try:
            return await self._sessions.get().client()
        except Exception as exc:
            raise ToolUnavailable(f"MCP server {self.name!r} could not be reached: {_describe(exc)}",
                                  server=self.name) from exc

    async def aclose(self) -> None:
        """Close this loop's session (a stdio server exits); the next call opens a new one."""
        session = self._sessions.get()
        self._sessions.discard(session)
        await session.close()

    def close(self) -> None:
        """Close every session whose loop still runs, from any thread but those loops' own."""
        for loop, session in self._sessions.items():
            self._sessions.discard(session)
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(self.timeout + 5)


class McpAction(Action, abstract=True):
    """Base of the action classes :func:`mcp_actions` makes: one per exposed tool."""

    arguments: dict[str, Any] = Field(default_factory=dict)

    mcp_server: ClassVar[str] = ""
    mcp_tool: ClassVar[str] = ""
    input_schema: ClassVar[dict[str, Any]] = {}


class McpTool:
    """Performs one MCP tool's action on its server; an ``isError`` result raises :class:`ToolErrorResult`."""

    def __init__(self, server: McpServer, tool: str) -> None:
        self.server = server
        self.tool = tool

    def __repr__(self) -> str:
        return f"McpTool({self.server.name!r}, {self.tool!r})"

    async def __call__(self, action: McpAction) -> Result:
        result = await self.server.call_tool(self.tool, dict(action.arguments), idempotent=action.idempotent)
        content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
        text = "\n".join(block["text"] for block in content if block.get("type") == "text")
        if result.is_error:
            raise ToolErrorResult(f"MCP tool {self.server.name}.{self.tool} answered an error: {text or '(no text)'}",
                                  server=self.server.name, tool=self.tool)
        return Result({"text": text, "content": content, "structured": result.structured_content})


def mcp_actions(server: McpServer, config: Mapping[str, Mapping[str, Any]], *,
                listed: list[McpToolInfo] | None = None) -> dict[type[McpAction], McpTool]:
    """``{action class: tool}`` for each tool of ``server`` that ``config`` names (module docstring).

    ``listed`` skips asking the server (the tools as :meth:`McpServer.list_tools` gave them).
    """
    tools = {t.name: t for t in (server.list_tools() if listed is None else listed)}
    missing = sorted(set(config) - set(tools))
    if missing:
        raise PolicyError(f"MCP server {server.name!r} lists no tool {', '.join(map(repr, missing))}; "
                          f"it lists: {', '.join(sorted(tools)) or 'none'}")
    return {_action_class(server, tools[name], dict(settings)): McpTool(server, name)
            for name, settings in sorted(config.items())}


def action_for(tools: Mapping[Any, Any], name: str) -> type[McpAction]:
    """The action class named ``name`` (``mcp.<server>.<tool>``) among an agent's ``tools``."""
    for cls in tools:
        if isinstance(cls, type) and issubclass(cls, McpAction) and cls.__message_name__ == name:
            return cls
    raise KeyError(f"no MCP action named {name!r} among these tools")


def _action_class(server: McpServer, info: McpToolInfo, settings: dict[str, Any]) -> type[McpAction]:
    where = f"MCP tool {server.name}.{info.name}"
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise PolicyError(f"{where}: unknown settings {unknown}; known: {sorted(_SETTINGS)}")
    for required in ("capability", "risk"):
        if required not in settings:
            raise PolicyError(f"{where}: set its {required} (deny by default: nothing is assumed)")
    errors = settings.get("error_results", "failure")
    if errors not in ("failure", "business"):
        raise PolicyError(f"{where}: error_results must be 'failure' or 'business', got {errors!r}")
    cost = settings.get("cost", 0.0)
    if not callable(cost) and not (isinstance(cost, (int, float)) and math.isfinite(cost) and cost >= 0):
        raise PolicyError(f"{where}: cost must be a finite number >= 0 or a function, got {cost!r}")
    name = settings.get("name") or f"mcp.{server.name}.{info.name}"
    ident = re.sub(r"\W", "_", name)
    namespace = {"__module__": __name__, "__qualname__": f"McpAction_{ident}", "__doc__": info.description or None,
                 "mcp_server": server.name, "mcp_tool": info.name, "input_schema": info.input_schema}
    try:
        return type(McpAction)(  # type: ignore[no-any-return]
            f"McpAction_{ident}", (McpAction,), namespace, name=name, version=settings.get("version", 1),
            capability=settings["capability"], risk=settings["risk"], cost=cost,
            idempotent=settings.get("idempotent", False),
            business_errors=(ToolErrorResult,) if errors == "business" else ())
    except Exception as exc:
        raise PolicyError(f"{where}: {exc}") from exc


def _translate(server: McpServer, what: str, exc: Exception, *, in_flight_retryable: bool) -> Exception:
    """Our error for one the SDK raised during a request (table in the module docstring)."""
    from mcp import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    where = f"MCP server {server.name!r} ({what})"
    if isinstance(exc, MCPError) and exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
        return ToolRejected(f"{where} refused the call: {exc.message} (code {exc.code})", server=server.name)
    if isinstance(exc, (MCPError, OSError, EOFError)) or type(exc).__module__.startswith("anyio"):
        return ToolUnavailable(f"{where}: connection lost or timed out during the call, which may have taken "
                               f"effect: {_describe(exc)}", retryable=in_flight_retryable, server=server.name)
    return ToolRejected(f"{where} answered something unexpected: {_describe(exc)}", server=server.name)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _run_in_thread(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` on a fresh loop in a new thread (callers may be inside a loop)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="mcp-list", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
