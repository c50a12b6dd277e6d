"""`crdtmds start --dial-url NAME=URL`: read into a mapping, malformed ones refused."""

from __future__ import annotations

import pytest
import typer
from crdtmds_cli.server import _parse_dial_urls


def test_dial_urls_map_server_names_to_urls() -> None:
    parsed = _parse_dial_urls(["s2=ws://127.0.0.1:7402", " s3 = ws://proxy:9000/"])
    assert parsed == {"s2": "ws://127.0.0.1:7402", "s3": "ws://proxy:9000/"}


@pytest.mark.parametrize("option", ["ws://127.0.0.1:7402", "=ws://h:1", "s2=http://h:1", "s2="])
def test_a_malformed_dial_url_is_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        _parse_dial_urls([option])
    assert exit_info.value.exit_code == 2
    assert "--dial-url" in capsys.readouterr().err
