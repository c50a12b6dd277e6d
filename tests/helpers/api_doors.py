"""The command layer of an in-process server, as tests drive it: with a throttle and a
clock of the test's choosing, through the JSON door of `/api`."""

from __future__ import annotations

from collections.abc import Callable

from crdtmds.api.dispatch import AdminAPI
from crdtmds.core import auth
from crdtmds.server import Server


def admin_api(
    server: Server,
    *,
    throttle: auth.LoginThrottle | None = None,
    clock: Callable[[], float] | None = None,
) -> AdminAPI:
    """The server's command layer, its logins throttled and timed as given."""
    if throttle is not None:
        server.logins.throttle = throttle
    if clock is not None:
        server.logins.clock = clock
    return server.api
