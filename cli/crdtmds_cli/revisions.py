"""`crdtmds revisions`, `revert`, `verify` and `where-used`: a domain's history and checks."""

from __future__ import annotations

from typing import Annotated

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import UID_RE, all_pages, ref_key, with_login
from crdtmds_cli.login_file import CliFailure
from crdtmds_cli.options import (
    DomainReadOption,
    JsonOption,
    LoginFileOption,
    add_command,
)
from crdtmds_cli.output import echo_json, echo_table, say
from crdtmds_cli.verify_report import problem_names, problem_row


def revisions_command(
    domain: DomainReadOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest revisions to show.")] = 50,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """List published revisions of the domain, newest first."""

    async def work(client: Client) -> None:
        params = {"domain": domain} if domain else {}
        reply = await all_pages(client, "show-revisions", "objects", limit, **params)
        if as_json:
            echo_json(reply)
            return
        echo_table(
            ["Published at", "Admin", "Server", "Changes", "Comments", "UID"],
            [
                [
                    r.get("published-at"),
                    r.get("admin"),
                    r.get("server"),
                    r.get("changes"),
                    r.get("comments"),
                    r.get("uid"),
                ]
                for r in reply["objects"]
            ],
        )

    with_login(login_file, work)


def revert_command(
    revision: Annotated[
        str, typer.Argument(help="UID of the revision to go back to (a unique prefix will do).")
    ],
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment of the new revision.")
    ] = None,
    login_file: LoginFileOption = None,
) -> None:
    """Publish a new revision whose content is that of an earlier one."""

    async def work(client: Client) -> None:
        target = await resolve_revision(client, revision)
        params = {"to-revision": target, **({"comments": comments} if comments else {})}
        reply = await client.call("revert-to-revision", **params)
        say(f"reverted to {target}: published revision {reply['revision']['uid']}")

    with_login(login_file, work)


async def resolve_revision(client: Client, ref: str) -> str:
    """The full uid of the revision `ref` names: a full uid as it is, else the one revision
    (or session) uid it begins; an ambiguous prefix is refused with its candidates."""
    if UID_RE.match(ref):
        return ref
    listed = await all_pages(client, "show-revisions", "objects", None)
    candidates = [r for r in listed["objects"] if str(r.get("uid", "")).startswith(ref)]
    if not candidates:
        candidates = [r for r in listed["objects"] if str(r.get("session", "")).startswith(ref)]
        candidates = candidates[:1]  # the session's latest revision, as the server picks
    if len(candidates) > 1:
        shown = "; ".join(
            f"{r['uid']} ({r.get('published-at')}, {r.get('admin')})" for r in candidates
        )
        raise CliFailure(
            "err_ambiguous_revision",
            f"{len(candidates)} revisions begin with '{ref}': {shown}. Give more of the uid",
        )
    return str(candidates[0]["uid"]) if candidates else ref


def verify_command(
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Report what concurrent publishes left behind: duplicate names, dangling references.

    Exits 1 when it finds a problem, 0 when there is none.
    """

    async def work(client: Client) -> int:
        extra = {"domain": domain} if domain else {}
        reply = await client.call("verify-policy", **extra)
        if as_json:
            echo_json(reply)
        elif not reply["problems"]:
            say(f"domain {reply['domain']['name']}: no problems")
        else:
            names = await problem_names(client, reply["problems"], extra)
            echo_table(
                ["Problem", "Name / holder", "Details"],
                [problem_row(p, names) for p in reply["problems"]],
            )
        return len(reply["problems"])

    problems = with_login(login_file, work)
    if problems:
        say(f"{problems} problem(s) found", err=True)
        raise typer.Exit(1)


def where_used_command(
    name: Annotated[str, typer.Argument(help="Name or uid of the object.")],
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Show the groups and rules that use an object."""

    async def work(client: Client) -> None:
        params = {ref_key(name): name, **({"domain": domain} if domain else {})}
        reply = await client.call("where-used", **params)
        if as_json:
            echo_json(reply)
            return
        used = reply["used-directly"]
        rows = [["group", o.get("name"), ""] for o in used["objects"]]
        rows += [
            [
                "rule",
                f"{r['position']} {r['rule'].get('name') or ''}".strip(),
                ", ".join(r["rule-columns"]),
            ]
            for r in used["access-control-rules"]
        ]
        say(f"{reply['object']['name']} is used {used['total']} time(s)")
        echo_table(["Used by", "Name", "Columns"], rows)

    with_login(login_file, work)


def register(app: typer.Typer) -> None:
    add_command(app, "revisions", revisions_command)
    add_command(app, "revert", revert_command)
    add_command(app, "verify", verify_command)
    add_command(app, "where-used", where_used_command)
