"""`crdtmds login` and `crdtmds logout`.

A login is the authenticated sid on one server; `login` keeps it in the login file, so
that every later command reconnects with it and edits made by several commands collect
in one session until `crdtmds session publish` (or `--publish` on the edit itself).
When its server is lost, a later command logs in on the next `--server` with the password
kept by `--remember-password`, else with `CRDTMDS_PASSWORD` if set; without either it
stops and says so.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from crdtmds.api_socket import REPLY_TIMEOUT, ApiError
from crdtmds.client import Client, run
from crdtmds_cli.calls import fail, load_login, note_wait, show_client_warnings
from crdtmds_cli.login_file import StoredLogin, device_token_of, login_file_path
from crdtmds_cli.options import JsonOption, LoginFileOption, add_command
from crdtmds_cli.output import echo_json, say

ServerOption = Annotated[
    list[str],
    typer.Option(
        "--server",
        help="Server URL, e.g. ws://10.0.0.1:8443 (repeat for failover, in order of preference).",
    ),
]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="CRDTMDS_PASSWORD",
        show_default=False,
        help="Password (default: $CRDTMDS_PASSWORD, else asked).",
    ),
]
ContinueOption = Annotated[
    bool,
    typer.Option(
        "--continue-session", help="Take over your latest unpublished session on that server."
    ),
]
RememberOption = Annotated[
    bool,
    typer.Option(
        "--remember-password",
        help="Keep the password in the login file, so that a lost server can "
        "be replaced by the next one (else $CRDTMDS_PASSWORD is used).",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.1, help="Seconds to connect; a slow reply is noted this often (max 5)."
    ),
]
ReplyTimeoutOption = Annotated[
    float,
    typer.Option(
        "--reply-timeout",
        min=1,
        envvar="CRDTMDS_REPLY_TIMEOUT",
        help="Seconds to wait for a reply on an open connection before failing over.",
    ),
]


def register(app: typer.Typer) -> None:
    add_command(app, "login", login_command)
    add_command(app, "logout", logout_command)


def login_command(
    server: ServerOption,
    user: Annotated[str, typer.Option("--user", help="Administrator name.")],
    password: PasswordOption = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Domain to work in (default: system-wide).")
    ] = None,
    session_name: Annotated[
        str | None, typer.Option("--session-name", help="Name shown for the session.")
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Log in read-only.")] = False,
    continue_session: ContinueOption = False,
    remember_password: RememberOption = False,
    timeout: TimeoutOption = 10.0,
    reply_timeout: ReplyTimeoutOption = REPLY_TIMEOUT,
    login_file: LoginFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Log in on the first server that answers and keep the login for later commands."""
    if password is None:
        password = typer.prompt(f"Password for {user}", hide_input=True)
    try:
        client = Client(
            server,
            user=user,
            password=password,
            domain=domain,
            session_name=session_name,
            timeout=timeout,
            reply_timeout=reply_timeout,
            read_only=read_only,
            continue_last_session=continue_session,
            device_token=device_token_of(login_file_path(login_file), user),
            on_wait=note_wait,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--server") from None
    reply = _log_in(client)
    stored = StoredLogin(
        urls=list(client.urls),
        user=user,
        sid=reply["sid"],
        server=client.server,
        domain=domain,
        session_uid=reply.get("uid"),
        unpublished=client.unpublished,
        password=password if remember_password else None,
        timeout=timeout,
        device_token=client.device_token,
        reply_timeout=reply_timeout,
    )
    path = login_file_path(login_file)
    stored.save(path)
    for warning in reply.get("warnings") or []:  # e.g. the draft to continue was lost
        message = warning.get("message") if isinstance(warning, dict) else warning
        say(f"warning: {message}", err=True)
    if as_json:
        echo_json({k: v for k, v in reply.items() if k != "sid"})
        return
    where = f"domain {domain}" if domain else "the system-wide view"
    mode = " (read-only)" if reply.get("read-only") else ""
    say(f"logged in to {where} on {client.server} as {user}{mode}")
    say(f"session {reply.get('uid')}; login kept in {path}")
    if client.unpublished:
        say("the session holds unpublished changes: `crdtmds session show`")


def _log_in(client: Client) -> dict[str, Any]:
    """Log in and disconnect, leaving the login open on the server for later commands."""

    async def work() -> dict[str, Any]:
        try:
            return await client.login()
        finally:
            client.logout_on_close = False
            await client.close()

    try:
        return run(work())
    except ApiError as exc:
        fail(exc.code, exc.message)


def logout_command(login_file: LoginFileOption = None) -> None:
    """End the login and remove the login file (unpublished changes stay on the server)."""
    path = login_file_path(login_file)
    client = load_login(path).client()

    async def work() -> None:
        try:
            await client.call("logout")
        finally:
            await client.close()

    show_client_warnings()
    try:
        run(work())
    except ApiError as exc:
        say(f"warning: {exc.code}: {exc.message}", err=True)
    finally:
        path.unlink(missing_ok=True)
    say("logged out")
