"""A real MCP server for the MCP tests, run as a subprocess over stdio: ``python tests/mcp_server.py CALLS``.

Deterministic tools; every call appends one line (``<tool> <arguments>``)
to the file ``CALLS``, so a test counts, from outside the process, what
reached the server:

``add(a, b)``             a + b
``lookup_order(order)``   the order's status, as JSON text
``refund(order)``         always answers an error result (``isError``)
``wipe_database()``       listed, never meant to be exposed
"""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

CALLS = sys.argv[1] if len(sys.argv) > 1 else None
ORDERS = {"A1": "shipped", "B2": "pending"}

server = MCPServer("shop")


def _count(tool: str, **arguments: object) -> None:
    if CALLS:
        with open(CALLS, "a") as f:
            f.write(f"{tool} {json.dumps(arguments, sort_keys=True)}\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _count("add", a=a, b=b)
    return a + b


@server.tool()
def lookup_order(order: str) -> dict:
    """The status of an order."""
    _count("lookup_order", order=order)
    return {"order": order, "status": ORDERS.get(order, "unknown")}


@server.tool()
def refund(order: str) -> str:
    """Refund an order (this test server always refuses)."""
    _count("refund", order=order)
    raise ToolError(f"order {order} cannot be refunded: payment provider declined")


@server.tool()
def wipe_database() -> str:
    """Delete everything."""
    _count("wipe_database")
    return "wiped"


if __name__ == "__main__":
    server.run("stdio")
