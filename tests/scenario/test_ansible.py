"""Ansible's `check_point.mgmt` collection against a real server's Web API: the README's
inventory and playbook run as written (only the host and port are given on the command
line), twice; the first run changes everything, the second nothing but its `publish`.
A third run with two values changed changes just those two tasks (and `publish`). Then
the same tasks in reverse order with `state: absent` remove it all, and again change
nothing but `publish`. `ansible-playbook` runs as a subprocess with the JSON callback, so
each task's `changed` is read from its own result.
Needs the `ansible` extra (`pip install -e '.[dev,ansible]'`, which `.ci/run` does)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.web_api_helpers import PASSWORD, LocalServer, WebApi, init_server, web_api_of

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "Europe"
HOST = "eu1"
"""The inventory's host name in the README."""
PLAYBOOK_TIMEOUT = 240.0
PUBLISH_TASK = "check_point.mgmt.cp_mgmt_publish"
IDENTIFYING = ("name", "layer")
"""What a `state: absent` task keeps of the README's parameters."""

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
if importlib.util.find_spec("ansible") is None or not ANSIBLE_PLAYBOOK.exists():
    pytest.skip(
        "ansible is not installed: pip install -e '.[dev,ansible]' (CI's .ci/run does)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(5 * PLAYBOOK_TIMEOUT + 120)


def readme_yaml_block(first_line: str) -> str:
    """The README's yaml block that starts with the comment `first_line`."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Use your Check Point tools", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"the README's Check Point section has no yaml block '{first_line}'")


def cleanup_playbook(playbook: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The README's playbook undone: its object tasks reversed, with `state: absent` and
    only their identifying parameters; its publish task stays last."""
    (play,) = playbook
    removals, publishes = [], []
    for task in play["tasks"]:
        module = next(k for k in task if k.startswith("check_point.mgmt."))
        if module == PUBLISH_TASK:
            publishes.append(task)
            continue
        params = {k: v for k, v in task[module].items() if k in IDENTIFYING}
        params |= {"state": "absent", "auto_publish_session": True}
        removals.append({"name": f"remove {task['name']}", module: params})
    return [{**play, "tasks": [*reversed(removals), *publishes]}]


class Runner:
    """Runs playbooks against one host with the README's inventory, all state in `root`."""

    def __init__(self, root: Path, web_api_url: str) -> None:
        self.root = root
        port = web_api_url.rsplit(":", 1)[1]
        self.extra = ["-e", "ansible_host=127.0.0.1", "-e", f"ansible_httpapi_port={port}"]
        self.inventory = root / "inventory.yml"
        self.inventory.write_text(readme_yaml_block("# inventory.yml"))
        home = root / "home"
        (root / "ansible.cfg").write_text("[defaults]\n")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LC_ALL": "C.UTF-8",
            "ADMIN_PASSWORD": PASSWORD,
            "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(root / "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(root / "remote-tmp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(root / "pc"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        }

    def run(self, name: str, playbook: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        """Runs `playbook`; returns each task's (name, changed). Fails on any failure."""
        path = self.root / f"{name}.yml"
        path.write_text(yaml.safe_dump(playbook, sort_keys=False))
        result = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), *self.extra, str(path)],
            cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=PLAYBOOK_TIMEOUT, check=False,
        )  # fmt: skip
        output = f"{name}: exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr}"
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"no JSON report\n{output}") from None
        outcomes = []
        for task in report["plays"][0]["tasks"]:
            host = task["hosts"][HOST]
            assert not host.get("failed") and not host.get("unreachable"), output
            outcomes.append((task["task"]["name"], bool(host.get("changed"))))
        stats = report["stats"][HOST]
        assert result.returncode == 0 and stats["failures"] == 0, output
        assert stats["changed"] == sum(changed for _, changed in outcomes), output
        return outcomes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A Primary with a Web API and the README's domain."""
    server, _ = init_server(tmp_path_factory.mktemp("ansible-servers"), "a1", [])
    try:
        server.start()
        api = WebApi(web_api_of(server)["url"])
        api.ok("add-domain", {"name": DOMAIN}, sid=api.login())
        api.close()
        yield server
    finally:
        server.stop()


def published(url: str) -> dict[str, Any]:
    """What a new login to the domain sees: object names, the layer's rules (name and
    action), and the addresses of hosts."""
    api = WebApi(url)
    try:
        sid = api.login(DOMAIN)
        objects = api.ok("show-objects", {"limit": 500, "details-level": "full"}, sid=sid)
        rulebase = api.ok(
            "show-access-rulebase",
            {"name": "Network", "limit": 50, "use-object-dictionary": False},
            sid=sid,
        )
        api.ok("logout", sid=sid)
    finally:
        api.close()
    return {
        "objects": sorted(o["name"] for o in objects["objects"]),
        "rules": [(r["name"], r["action"]["name"]) for r in rulebase["rulebase"]],
        "hosts": {
            o["name"]: o.get("ipv4-address") for o in objects["objects"] if o["type"] == "host"
        },
    }


def changed_site(site: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The README's playbook with another address for the host and another action for
    the rule: an `equals` that differs (`set-host`) and a rule that `equals` finds equal
    but whose action differs (`show-access-rule`, then `set-access-rule`)."""
    changed = copy.deepcopy(site)
    for task in changed[0]["tasks"]:
        if "check_point.mgmt.cp_mgmt_host" in task:
            task["check_point.mgmt.cp_mgmt_host"]["ip_address"] = "192.0.2.21"
        if "check_point.mgmt.cp_mgmt_access_rule" in task:
            task["check_point.mgmt.cp_mgmt_access_rule"]["action"] = "Drop"
    return changed


def test_readme_playbook_is_idempotent_and_its_cleanup_too(
    server: LocalServer, tmp_path: Path
) -> None:
    url = web_api_of(server)["url"]
    runner = Runner(tmp_path, url)
    site = yaml.safe_load(readme_yaml_block("# site.yml"))
    names = [task["name"] for task in site[0]["tasks"]]
    assert names[-1] == "publish" and PUBLISH_TASK in site[0]["tasks"][-1]

    first = runner.run("site-1", site)
    assert first == [(name, True) for name in names]
    state = published(url)
    assert state["rules"][0] == ("clients to apps", "Accept")
    assert {"app1", "clients", "apps", "app-8080"} <= set(state["objects"])
    assert state["hosts"]["app1"] == "192.0.2.20"

    second = runner.run("site-2", site)
    assert second == [(name, name == "publish") for name in names]
    assert published(url) == state

    edited = runner.run("site-changed", changed_site(site))
    assert edited == [(name, name in ("host", "rule", "publish")) for name in names]
    state = published(url)
    assert state["rules"][0] == ("clients to apps", "Drop")
    assert state["hosts"]["app1"] == "192.0.2.21"

    cleanup = cleanup_playbook(site)
    removals = [task["name"] for task in cleanup[0]["tasks"]]
    assert runner.run("cleanup-1", cleanup) == [(name, True) for name in removals]
    after = published(url)
    assert "clients to apps" not in after["rules"]
    assert not {"app1", "clients", "apps", "app-8080"} & set(after["objects"])

    again = runner.run("cleanup-2", cleanup)
    assert again == [(name, name == "publish") for name in removals]
