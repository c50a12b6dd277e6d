"""The login file: what `crdtmds login` stores for the commands that follow.

By default `~/.config/crdtmds/session.json` (its name predates the word "login file"),
mode 0600 since it holds a live sid; `--login-file` or `CRDTMDS_LOGIN_FILE` choose
another. The password is kept only with `--remember-password`; without it, a failover
logs in with `CRDTMDS_PASSWORD` when that is set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

from crdtmds.api_socket import REPLY_TIMEOUT, WaitListener
from crdtmds.client import Client

LOGIN_FILE_NAME = "session.json"
LOGIN_FILE_VERSION = 1
PASSWORD_VARIABLE = "CRDTMDS_PASSWORD"


class CliFailure(Exception):
    """A failure to report as `Error <code>: <message>`."""

    def __init__(self, code: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


@dataclass(slots=True)
class StoredLogin:
    """What the login file holds between commands."""

    urls: list[str]
    user: str
    sid: str
    server: str
    domain: str | None = None
    session_uid: str | None = None
    unpublished: bool = False
    password: str | None = None
    timeout: float = 10.0
    device_token: str | None = None
    reply_timeout: float = REPLY_TIMEOUT
    version: int = LOGIN_FILE_VERSION
    left_behind: list[list[str | None]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> StoredLogin:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CliFailure("err_not_logged_in", "not logged in: run `crdtmds login`") from None
        except (OSError, ValueError) as exc:
            raise CliFailure("err_session_file", f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != LOGIN_FILE_VERSION:
            raise CliFailure("err_session_file", f"{path} is not a crdtmds login file")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise CliFailure("err_session_file", f"{path} is incomplete: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the file readable by its owner only (it holds a live sid)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {k: v for k, v in asdict(self).items() if v is not None or k != "password"}
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream, indent=2)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)

    def client(self, on_wait: WaitListener | None = None) -> Client:
        """A client resuming this login; it fails over with the remembered password, else
        with `CRDTMDS_PASSWORD` when set."""
        return Client.resume(
            self.urls,
            sid=self.sid,
            user=self.user,
            server=self.server,
            password=self.password or os.environ.get(PASSWORD_VARIABLE) or None,
            domain=self.domain,
            session_uid=self.session_uid,
            unpublished=self.unpublished,
            timeout=self.timeout,
            device_token=self.device_token,
            reply_timeout=self.reply_timeout,
            on_wait=on_wait,
        )

    def follow(self, client: Client) -> None:
        """Take over where the client ended (another server or login after a failover)."""
        if client.sid is not None:
            self.sid = client.sid
            self.server = client.server
            self.session_uid = client.session_uid
        self.unpublished = client.unpublished
        self.device_token = client.device_token
        self.left_behind.extend([lost.server, lost.session] for lost in client.left_behind)


def login_file_path(option: Path | None) -> Path:
    """The login file: `--login-file`, else the one in the user's config directory."""
    if option is not None:
        return option
    return Path(typer.get_app_dir("crdtmds")) / LOGIN_FILE_NAME


def device_token_of(path: Path, user: str) -> str | None:
    """The device token kept by an earlier login of `user` in this login file: with it,
    failed logins of others (say, behind the same NAT) do not hold this login back."""
    try:
        stored = StoredLogin.load(path)
    except CliFailure:
        return None
    return stored.device_token if stored.user == user else None
