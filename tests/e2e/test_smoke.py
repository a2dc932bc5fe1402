"""The quickest proof that the relay works: a real SDK client through toolgate to a real server."""

import pytest
from mcp import Client

from conftest import demo_server, mcp_http_transport

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_python_sdk_lists_and_calls_the_demo_server_through_the_gateway(gateway_factory, mode):
    gw = gateway_factory(demo_server())
    async with Client(mcp_http_transport(gw.url), mode=mode) as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["echo", "add", "countdown"]
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert result.structured_content == {"sum": 42.0}
        assert not result.is_error
