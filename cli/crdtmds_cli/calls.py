"""Running a command's API calls with the stored login, and what failures print.

Failures print `Error <code>: <message>` on stderr and exit 1; usage mistakes exit 2; a
write whose reply was lost with its server (a publish, a revert, an edit) exits 3
(`OUTCOME_UNKNOWN`): it may have happened, so check before running it again. A reply that is only
slow is waited for, with a `still waiting for SERVER (N s)` line on stderr now and then.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from crdtmds.api_socket import ApiError
from crdtmds.client import Client, OutcomeUnknown, SessionLeftBehind, run
from crdtmds_cli.login_file import PASSWORD_VARIABLE, CliFailure, StoredLogin, login_file_path
from crdtmds_cli.output import say

T = TypeVar("T")

PAGE_SIZE = 500
OUTCOME_UNKNOWN = 3
"""Exit code of a publish, discard or revert that may or may not have happened."""
UID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class _EchoWarnings(logging.Handler):
    """Client log records as `warning: ...` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"warning: {record.getMessage()}", err=True)


def show_client_warnings() -> None:
    """Print the client's warnings (failover, drafts left behind) for the user to see."""
    logger = logging.getLogger("crdtmds.client")
    if not any(isinstance(h, _EchoWarnings) for h in logger.handlers):
        logger.addHandler(_EchoWarnings(logging.WARNING))  # also stops the bare fallback output


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    say(f"Error {code}: {message}", err=True)
    raise typer.Exit(exit_code)


def load_login(path: Path) -> StoredLogin:
    try:
        return StoredLogin.load(path)
    except CliFailure as failure:
        fail(failure.code, failure.message)


def note_wait(url: str, command: str, seconds: float) -> None:
    """A slow reply: say so on stderr, so that nobody takes the wait for a hang."""
    say(f"still waiting for {url} ({seconds:.0f} s, '{command}')", err=True)


def with_login(login_file: Path | None, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work` with the stored login, and store where the login ended up."""
    path = login_file_path(login_file)
    stored = load_login(path)
    client = stored.client(on_wait=note_wait)
    show_client_warnings()
    try:
        return run(_run_and_close(client, work))
    except SessionLeftBehind as exc:
        fail(
            exc.code,
            f"{exc.message}. Redo the edits here, or log in again on "
            f"{exc.details.get('server')} with --continue-session later.",
        )
    except OutcomeUnknown as exc:
        fail(exc.code, outcome_unknown_message(exc), OUTCOME_UNKNOWN)
    except ApiError as exc:
        fail(exc.code, _with_advice(exc))
    except CliFailure as failure:
        fail(failure.code, failure.message, failure.exit_code)
    finally:
        stored.follow(client)
        stored.save(path)


def outcome_unknown_message(exc: OutcomeUnknown) -> str:
    command, server = exc.details.get("command"), exc.details.get("server")
    session = exc.details.get("session")
    if command not in ("publish", "discard", "revert-to-revision"):
        return exc.message
    what = {"publish": "publish", "discard": "discard"}.get(str(command), "revert")
    check = (
        "check `crdtmds session show`"
        if command == "discard"
        else f"check `crdtmds revisions` (a revision of session {session} means it did)"
    )
    more = exc.message.partition("running it again")[2]
    return f"the {what} may have succeeded on {server}: {check} before running it again{more}"


def _with_advice(exc: ApiError) -> str:
    if exc.code != "err_login_required":
        return exc.message
    return (
        f"{exc.message}. To fail over without logging in again, set {PASSWORD_VARIABLE} "
        "or log in with `crdtmds login --remember-password`"
    )


async def _run_and_close(client: Client, work: Callable[[Client], Awaitable[T]]) -> T:
    try:
        return await work(client)
    finally:
        await client.close()


async def all_pages(
    client: Client, command: str, key: str, limit: int | None, **params: Any
) -> dict[str, Any]:
    """Every item of a paged list (up to `limit`), merged into the last page's reply."""
    items: list[Any] = []
    while True:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
        reply = await client.call(command, limit=size, offset=len(items), **params)
        items.extend(reply.get(key, []))
        done = reply.get("to", 0) >= reply.get("total", 0) or not reply.get(key)
        if done or (limit is not None and len(items) >= limit):
            break
    if key == "rulebase":
        dictionary: dict[str, Any] = {}
        for item in reply.get("objects-dictionary", []):
            dictionary[item["uid"]] = item
        reply["objects-dictionary"] = list(dictionary.values())
    return {**reply, key: items, "from": 1 if items else 0, "to": len(items)}


async def publish_now(client: Client, comments: str | None = None) -> None:
    params = {"comments": comments} if comments else {}
    reply = await client.call("publish", **params)
    revision = reply.get("revision")
    if revision is None:
        say("nothing to publish")
    else:
        say(f"published revision {revision['uid']} ({revision.get('changes', 0)} changes)")


def ref_key(ref: str) -> str:
    """The API parameter that names an object given as `ref`: its uid or its name."""
    return "uid" if UID_RE.match(ref) else "name"


def domain_param(domain: str | None) -> dict[str, Any]:
    """`--domain` of a read command, as API parameters."""
    return {"domain": domain} if domain else {}
