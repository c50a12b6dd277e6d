"""Peer processes of other automerge-repo implementations, for bench/peers.py: Python
`automerge.repo.Repo` children and stock JavaScript automerge-repo servers
(`bench/js/repo_server.mjs`).

Every such process prints ``listening on <url>`` once it accepts connections and exits
when its standard input closes; `start_listening` and `stop_listening` handle both kinds.
The JavaScript servers need `bench/js`'s npm packages: `ensure_js_packages` installs them
from its lock file when they are missing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

JS_DIR = Path(__file__).resolve().parents[1] / "js"
JS_SERVER = JS_DIR / "repo_server.mjs"
JS_PACKAGES = (
    "@automerge/automerge-repo",
    "@automerge/automerge-repo-network-websocket",
    "@automerge/automerge-repo-storage-nodefs",
    "ws",
)
JS_INSTALL = f"npm install --prefix {JS_DIR}"
"""How to install the JavaScript servers' packages (the versions of the lock file)."""
STOP_TIMEOUT = 5.0


@dataclass
class ListeningProcess:
    process: subprocess.Popen[str]
    url: str


def start_listening(command: list[str], log: Path) -> ListeningProcess:
    """Start `command` (stderr appended to `log`) and wait for its ``listening on`` line."""
    with log.open("a") as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait(STOP_TIMEOUT)
        raise RuntimeError(f"{command[:2]} did not start: {log.read_text()[-2000:]}")
    return ListeningProcess(process, line.removeprefix("listening on ").strip())


def stop_listening(listener: ListeningProcess) -> None:
    """Close its standard input, which ends it; kill it if it is still there after a while."""
    with contextlib.suppress(OSError):
        assert listener.process.stdin is not None
        listener.process.stdin.close()
    try:
        listener.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        listener.process.kill()
        listener.process.wait(STOP_TIMEOUT)


def start_star(
    command: Callable[[list[str], str], list[str]], root: Path, stack: contextlib.ExitStack
) -> list[ListeningProcess]:
    """A hub and two leaves that dial it; `command(dial, role)` is a process's command line.
    Stopped when `stack` closes. Logs go to `root/<role>.log`."""
    root.mkdir(parents=True, exist_ok=True)
    started: list[ListeningProcess] = []
    for role in ("hub", "leaf-1", "leaf-2"):
        dial = [started[0].url] if started else []
        listener = start_listening(command(dial, role), root / f"{role}.log")
        stack.callback(stop_listening, listener)
        started.append(listener)
    return started


def js_missing() -> str | None:
    """Why the JavaScript servers cannot run here (no node, or packages not installed), or
    None when they can."""
    if shutil.which("node") is None:
        return "node is not installed"
    absent = [name for name in JS_PACKAGES if not (JS_DIR / "node_modules" / name).is_dir()]
    if absent:
        return f"{', '.join(absent)} not installed in {JS_DIR} (run: {JS_INSTALL})"
    return None


def ensure_js_packages() -> None:
    """Install `bench/js`'s packages when they are missing (`npm install`, at the versions
    of the lock file); raise RuntimeError saying exactly what to do when that is not possible."""
    reason = js_missing()
    if reason is None:
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError(
            f"the JavaScript servers need node and npm ({reason}): install Node.js >= 20,"
            f" then run: {JS_INSTALL}; or leave them out with --systems"
        )
    print(f"installing the JavaScript servers' packages: {JS_INSTALL}", flush=True)
    completed = subprocess.run(
        ["npm", "install", "--prefix", str(JS_DIR)], capture_output=True, text=True, check=False
    )
    reason = js_missing()
    if completed.returncode != 0 or reason is not None:
        raise RuntimeError(
            f"{JS_INSTALL} failed ({reason or completed.returncode}):"
            f" {completed.stderr.strip()[-2000:]}"
        )


def js_server_command(storage: Path | None) -> Callable[[list[str], str], list[str]]:
    """Command lines of JavaScript servers for `start_star`: with NodeFS storage in a
    folder per role under `storage`, or in memory when `storage` is None."""

    def command(dial: list[str], role: str) -> list[str]:
        line = ["node", str(JS_SERVER)]
        if storage is not None:
            line += ["--storage", str(storage / role)]
        for url in dial:
            line += ["--dial", url]
        return line

    return command
