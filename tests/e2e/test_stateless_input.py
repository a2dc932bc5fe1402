"""2026-07-28 clients cannot be sent requests: the gateway turns an upstream's elicitation or
sampling request into an `input_required` result and resumes the upstream call on the retry."""

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageResult, ElicitResult, TextContent

from conftest import RawMcp, fixture_stdio, mcp_http_transport

pytestmark = pytest.mark.anyio


async def test_an_upstream_elicitation_reaches_a_stateless_client_and_its_answer_gets_back(gateway_factory):
    gw = gateway_factory(fixture_stdio())
    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return ElicitResult(action="accept", content={"username": "ann", "email": "ann@example.org"})

    async with Client(mcp_http_transport(gw.url), mode="2026-07-28", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    assert asked == ["Who are you?"]
    assert not result.is_error
    assert "ann" in result.content[0].text


async def test_sampling_reaches_a_stateless_client_only_when_the_server_may_sample(gateway_factory):
    async def on_sample(context, params):
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled-42"), model="m")

    refused = gateway_factory(fixture_stdio())
    async with Client(mcp_http_transport(refused.url), mode="2026-07-28", sampling_callback=on_sample) as client:
        with pytest.raises(MCPError, match="sampling is not enabled for this server"):
            await client.call_tool("test_sampling", {"prompt": "hi"})

    allowed = gateway_factory(fixture_stdio(allow_sampling="true"))
    async with Client(mcp_http_transport(allowed.url), mode="2026-07-28", sampling_callback=on_sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "hi"})
    assert not result.is_error, result
    assert "sampled-42" in result.content[0].text


def test_a_forged_request_state_is_refused(gateway_factory):
    gw = gateway_factory(fixture_stdio())
    raw = RawMcp(gw.url, token=gw.token, mode="2026-07-28")
    answer = raw.request("tools/call", {"name": "echo", "arguments": {}, "requestState": "toolgate.00ff", "inputResponses": {}})
    assert answer[-1]["error"]["message"] == "unknown or expired requestState"
