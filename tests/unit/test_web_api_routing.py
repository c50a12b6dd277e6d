"""Which requests the Web API door runs without aiohttp's router (`WebApiDoor.shortcut`):
a POST of one command, plain or versioned; anything else (another method, an `Expect`
header, a path the router would read otherwise) goes to the router, which answers it as
before."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from crdtmds.transports.http_api import _command_of


@pytest.mark.parametrize(
    ("method", "path", "headers", "command"),
    [
        ("POST", "/web_api/show-host", {}, "show-host"),
        ("POST", "/web_api/v1.8/show-host", {}, "show-host"),
        ("POST", "/web_api/show%2Dhost", {}, "show-host"),
        ("POST", "/web_api/v1", {}, "v1"),  # a command name, refused as unknown
        ("POST", "/web_api/show-host?x=1", {}, "show-host"),
        ("GET", "/web_api/show-host", {}, None),
        ("POST", "/web_api/show-host", {"Expect": "100-continue"}, None),
        ("POST", "/web_api/", {}, None),
        ("POST", "/web_api/v1.8/", {}, None),
        ("POST", "/web_api/a/b/c", {}, None),
        ("POST", "/web_api/a%2Fb", {}, None),
        ("POST", "/api/web/show-host", {}, None),
        ("POST", "/web_apis/show-host", {}, None),
    ],
)
def test_command_requests_skip_the_router(
    method: str, path: str, headers: dict[str, str], command: str | None
) -> None:
    assert _command_of(make_mocked_request(method, path, headers=headers)) == command
