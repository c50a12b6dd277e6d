"""The web console in a real headless browser (Debian's chromium driven by Playwright)
against two real server processes: live updates across servers, validation errors next
to their fields, revert, the cluster page following a server going down and coming
back, and data shown escaped, never run.

Skipped, saying why, when Playwright or /usr/bin/chromium is missing (README: Console).
Screenshots go to tests/results/console/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.web_api_helpers import (
    ADMIN,
    PASSWORD,
    LocalServer,
    WebApi,
    init_server,
    join_server,
    run_cli,
)

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "console"
WAIT_MS = 20_000
"""Milliseconds any one browser expectation may take (convergence included)."""
DOMAIN = "acme"
OTHER_DOMAIN = "beta"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
if not CHROMIUM.exists():
    pytest.skip(
        "chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)

pytestmark = pytest.mark.timeout(240)


class Cluster:
    """Two servers with Web APIs, the domain `acme`, and the URL of each console."""

    def __init__(self, first: LocalServer, second: LocalServer) -> None:
        self.first, self.second = first, second
        status = json.loads(
            run_cli("status", "--server", first.url, "--user", ADMIN, "--password", PASSWORD,
                    "--json")
        )  # fmt: skip
        self.web = {entry["name"]: entry["web-api"]["url"] for entry in status["servers"]}

    def heads(self, name: str = "k1") -> list[str]:
        """The domain's heads on a server, by its Web API (asyncio is the browser's here)."""
        api, sid = self.api(name)
        try:
            return api.ok("show-status", {}, sid=sid)["domains"][DOMAIN]["heads"]
        finally:
            api.close()

    def api(self, name: str = "k1") -> tuple[WebApi, str]:
        api = WebApi(self.web[name])
        return api, api.login(DOMAIN)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("console")
    first, secret = init_server(root, "k1", [])
    second: LocalServer | None = None
    try:
        first.start()
        second = join_server(root, "k2", first.url, secret)
        second.start()
        pair = Cluster(first, second)
        api = WebApi(pair.web["k1"])
        sid = api.login()
        for name in (DOMAIN, OTHER_DOMAIN):
            api.ok("add-domain", {"name": name}, sid=sid)
        api.close()
        yield pair
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()


class Console:
    """One browser tab on one server's console, recording dialogs and script errors."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1400, "height": 850}
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.url = url

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def log_in(self, domain: str = DOMAIN) -> None:
        page = self.page
        page.goto(self.url + "/")
        page.get_by_label("User").fill(ADMIN)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Domain").fill(domain)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".live-state")).to_have_text("live")

    def go(self, name: str) -> None:
        self.page.get_by_role("link", name=name).click()

    def shot(self, name: str) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(RESULTS / f"{name}.png"))

    def close(self) -> None:
        assert self.errors == [], self.errors
        self.context.close()


@pytest.fixture
def consoles(browser: Any) -> Iterator[list[Console]]:
    opened: list[Console] = []
    yield opened
    for console in opened:
        console.close()


def open_console(browser: Any, consoles: list[Console], url: str) -> Console:
    console = Console(browser, url)
    consoles.append(console)
    console.log_in()
    return console


def add_host(console: Console, name: str, address: str) -> None:
    page = console.page
    console.go("Objects")
    page.get_by_role("tab", name="Hosts").click()
    page.get_by_role("button", name="Add", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("IPv4 address").fill(address)
    dialog.get_by_role("button", name="Add").click()


def publish(console: Console, comment: str) -> None:
    page = console.page
    page.get_by_role("button", name="Publish").click()
    page.get_by_role("dialog").get_by_label("Comment").fill(comment)
    page.get_by_role("dialog").get_by_role("button", name="Publish").click()
    expect(page.locator(".task")).to_have_text("publish succeeded")
    expect(page.locator(".change-count")).to_have_text("0 unpublished changes")


def rule_row(page: Any, name: str) -> Any:
    return page.locator(".row.rule", has=page.locator(".name", has_text=name))


def test_publish_on_one_server_shows_live_on_the_other(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    watcher = open_console(browser, consoles, cluster.web["k2"])
    expect(watcher.page.locator(".total")).to_have_text(re.compile(r"\d+ rules?"))
    objects = open_console(browser, consoles, cluster.web["k2"])
    objects.go("Objects")
    objects.page.get_by_role("tab", name="Hosts").click()
    expect(objects.page.locator(".total")).to_have_text(re.compile(r"\d+ hosts"))
    editor = open_console(browser, consoles, cluster.web["k1"])
    add_host(editor, "web-1", "192.0.2.10")
    expect(editor.page.locator("td.name", has_text="web-1")).to_be_visible()
    editor.go("Rulebase")
    page = editor.page
    page.get_by_role("button", name="Add rule").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("allow web")
    dialog.get_by_label("Destination").fill("web-1")
    dialog.get_by_label("Service").fill("")
    dialog.get_by_label("Comments").fill("from the console")
    dialog.get_by_role("button", name="Add").click()
    expect(rule_row(page, "allow web")).to_be_visible()
    expect(page.locator(".change-count")).to_have_text("2 unpublished changes")
    page.get_by_role("button", name="Changes").click()
    diff = page.get_by_role("dialog")
    expect(diff.locator("li.added")).to_have_count(2)
    expect(diff).to_contain_text("host web-1")
    expect(diff).to_contain_text("access-rule allow web")
    editor.shot("session-changes")
    page.keyboard.press("Escape")
    publish(editor, "web rule")
    # The other server's console, open all along, shows the rule without a reload.
    row = rule_row(watcher.page, "allow web")
    expect(row).to_be_visible()
    expect(row.locator(".refs").nth(1)).to_have_text("web-1")
    expect(row).to_have_class(re.compile("flash"))
    watcher.shot("live-update-on-second-server")
    host = objects.page.locator("tr", has=objects.page.locator("td.name", has_text="web-1"))
    expect(host).to_have_class(re.compile("flash"))
    # The side panel: the object under a name, and where it is used.
    row.get_by_role("button", name="web-1").click()
    panel = watcher.page.locator("aside.panel")
    expect(panel).to_contain_text("192.0.2.10")
    expect(panel).to_contain_text("allow web")
    watcher.shot("rulebase-side-panel")


def test_validation_error_is_shown_next_to_its_field_and_changes_nothing(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    console = open_console(browser, consoles, cluster.web["k1"])
    before = cluster.heads()
    add_host(console, "bad-host", "999.1.2.3")
    page = console.page
    dialog = page.get_by_role("dialog")
    error = dialog.locator(".field", has=page.get_by_label("IPv4 address")).locator(".field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not a valid IP address")
    expect(dialog.get_by_label("IPv4 address")).to_have_attribute("aria-invalid", "true")
    name_error = dialog.locator(".field", has=page.get_by_label("Name")).locator(".field-error")
    expect(name_error).to_be_hidden()
    console.shot("validation-error")
    # An oversize name: refused, and said next to the name.
    dialog.get_by_label("Name").fill("n" * 5000)
    dialog.get_by_label("IPv4 address").fill("192.0.2.77")
    dialog.get_by_role("button", name="Add").click()
    expect(name_error).to_contain_text("longer than")
    expect(error).to_be_hidden()
    page.keyboard.press("Escape")
    expect(page.locator(".change-count")).to_have_text("0 unpublished changes")
    api, sid = cluster.api()
    assert api.ok("show-hosts", {"filter": "bad-host"}, sid=sid)["total"] == 0
    assert api.ok("show-hosts", {"filter": "nnnn"}, sid=sid)["total"] == 0
    api.close()
    assert cluster.heads() == before


def test_revert_brings_the_rulebase_back(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    api, sid = cluster.api()
    api.ok("add-access-rule", {"layer": "Network", "position": "top", "name": "keep me"}, sid=sid)
    api.ok("publish", {"comments": "keep me"}, sid=sid)
    console = open_console(browser, consoles, cluster.web["k1"])
    page = console.page
    row = rule_row(page, "keep me")
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("^Delete rule")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    publish(console, "deleted keep me")
    console.go("Revisions")
    revisions = page.locator("table.revisions tbody tr")
    expect(revisions.first.locator("td").nth(3)).to_have_text("deleted keep me")
    kept = revisions.filter(has=page.locator("td", has_text=re.compile("^keep me$")))
    kept.get_by_role("button", name=re.compile("^Revert")).click()
    page.get_by_role("dialog").get_by_role("button", name="Revert").click()
    expect(revisions.first.locator("td").nth(3)).to_have_text(re.compile("^revert to revision"))
    # What the delete published, read back from its revision.
    deleted = revisions.filter(has=page.locator("td", has_text="deleted keep me"))
    deleted.get_by_role("button", name=re.compile("^Changes")).click()
    removed = page.get_by_role("dialog").locator("li.deleted")
    expect(removed).to_have_text("\u2212 access-rule keep me")
    page.keyboard.press("Escape")
    console.go("Rulebase")
    expect(rule_row(page, "keep me")).to_be_visible()
    console.shot("after-revert")
    names = [r["name"] for r in api.ok("show-access-rulebase", {"name": "Network"}, sid=sid)
             ["rulebase"] if r.get("type") == "access-rule"]  # fmt: skip
    api.close()
    assert "keep me" in names


def test_the_rulebase_and_its_forms_work_from_the_keyboard(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    api, sid = cluster.api()
    for name in ("kb second", "kb first"):  # each to the top
        api.ok("add-access-rule", {"layer": "Network", "position": "top", "name": name}, sid=sid)
    api.ok("publish", {}, sid=sid)
    api.close()
    console = open_console(browser, consoles, cluster.web["k1"])
    page = console.page
    expect(rule_row(page, "kb second")).to_have_attribute("data-number", "2")
    scroller = page.locator(".scroller")
    scroller.focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    expect(rule_row(page, "kb second")).to_have_class(re.compile("selected"))
    # A focused control shows it.
    outline = scroller.evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")  # edit the selected rule
    dialog = page.get_by_role("dialog", name="Edit rule 2")
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Source")).to_be_focused()
    dialog.get_by_label("Comments").fill("typed, not clicked")
    dialog.get_by_label("Comments").press("Enter")  # submits the form
    expect(rule_row(page, "kb second").locator(".comments")).to_have_text("typed, not clicked")
    scroller.focus()
    page.keyboard.press("Alt+ArrowUp")  # move it up one place
    expect(rule_row(page, "kb second")).to_have_attribute("data-number", "1")
    expect(page.locator(".change-count")).to_have_text("1 unpublished change")
    console.shot("keyboard-edit")
    page.get_by_role("button", name="Discard").focus()
    page.keyboard.press("Enter")
    page.get_by_role("dialog").get_by_role("button", name="Discard").press("Enter")
    expect(page.locator(".change-count")).to_have_text("0 unpublished changes")
    expect(rule_row(page, "kb second")).to_have_attribute("data-number", "2")
    # With a mouse, a drag moves it too.
    rule_row(page, "kb second").locator(".num").drag_to(rule_row(page, "kb first").locator(".num"))
    expect(rule_row(page, "kb second")).to_have_attribute("data-number", "1")
    expect(page.locator(".change-count")).to_have_text("1 unpublished change")
    page.get_by_role("button", name="Discard").click()
    page.get_by_role("dialog").get_by_role("button", name="Discard").click()
    expect(page.locator(".change-count")).to_have_text("0 unpublished changes")


def test_names_and_comments_are_shown_escaped_never_run(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    script = "<script>alert('name')</script>"
    image = '<img src=x onerror="alert(1)">'
    unicode = "Ωmega-主机-🔥-\u05e9\u05dc\u05d5\u05dd"
    long_comment = "x" * 2000 + "<b>end</b>"
    api, sid = cluster.api()
    api.ok("add-host", {"name": script, "ipv4-address": "192.0.2.50", "comments": image}, sid=sid)
    api.ok("add-host", {"name": unicode, "ipv4-address": "192.0.2.51", "comments": long_comment},
           sid=sid)  # fmt: skip
    api.ok("add-access-rule", {"layer": "Network", "position": "top", "name": image,
                               "source": [script], "destination": [unicode],
                               "comments": script}, sid=sid)  # fmt: skip
    api.ok("publish", {}, sid=sid)
    api.close()
    console = open_console(browser, consoles, cluster.web["k1"])
    page = console.page
    row = rule_row(page, image)
    expect(row).to_be_visible()
    expect(row.locator(".name")).to_have_text(image)
    expect(row.locator(".comments")).to_have_text(script)
    expect(row.get_by_role("button", name=script)).to_be_visible()
    expect(row.get_by_role("button", name=unicode)).to_be_visible()
    console.go("Objects")
    page.get_by_role("tab", name="Hosts").click()
    expect(page.locator("td.name", has_text=unicode)).to_have_text(unicode)
    expect(page.locator("td.name").filter(has_text="<script>")).to_have_text(script)
    expect(page.locator("td.comments").filter(has_text="<b>end</b>")).to_have_text(long_comment)
    # Nothing the data holds became markup or ran.
    assert page.locator("main script, main img, main b").count() == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    console.shot("escaped-names")
    assert console.dialogs == []


def test_cluster_page_follows_a_server_down_and_back(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    console = open_console(browser, consoles, cluster.web["k1"])
    console.go("Cluster")
    page = console.page
    second = page.locator('tr[data-server="k2"]')
    expect(second).to_have_attribute("data-reachable", "true")
    expect(page.locator(f'tr[data-domain="{DOMAIN}"]')).to_have_attribute("data-converged", "true")
    console.shot("cluster")
    cluster.second.stop()
    expect(second).to_have_attribute("data-reachable", "false")
    expect(second.locator(".reachable")).to_contain_text("unreachable")
    console.shot("cluster-server-down")
    expect(page.locator(f'tr[data-domain="{DOMAIN}"]')).to_have_attribute("data-converged", "false")
    cluster.second.start()
    expect(second).to_have_attribute("data-reachable", "true")
    expect(page.locator(f'tr[data-domain="{DOMAIN}"]')).to_have_attribute("data-converged", "true")
    # A publish here: the plot measures until both servers hold it.
    api, sid = cluster.api()
    api.ok("add-host", {"name": "plotted", "ipv4-address": "192.0.2.99"}, sid=sid)
    api.ok("publish", {}, sid=sid)
    api.close()
    expect(page.locator(".plot figcaption")).to_contain_text("last")
    expect(page.locator(".plot rect")).to_have_count(1)
    console.shot("cluster-latency")


def test_an_administrator_of_several_domains_picks_one(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    console = Console(browser, cluster.web["k2"])
    consoles.append(console)
    page = console.page
    page.goto(console.url + "/")
    page.get_by_label("User").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()  # no domain given
    picker = page.get_by_label("Domain")
    expect(picker.locator("option")).to_have_text([DOMAIN, OTHER_DOMAIN])
    picker.select_option(OTHER_DOMAIN)
    page.get_by_role("button", name="Open").click()
    expect(page.locator(".where")).to_have_text(f"{ADMIN} @ {OTHER_DOMAIN} on server k2")
    expect(page.locator(".total")).to_have_text("0 rules")


def test_expired_login_returns_to_the_login_page(
    cluster: Cluster, browser: Any, consoles: list[Console]
) -> None:
    console = open_console(browser, consoles, cluster.web["k1"])
    sid = console.page.evaluate("JSON.parse(sessionStorage.getItem('crdtmds.console.login')).sid")
    api = WebApi(cluster.web["k1"])
    api.ok("logout", {}, sid=sid)  # as the server does once a login expires
    api.close()
    console.go("Objects")
    page = console.page
    expect(page.locator(".notice")).to_contain_text("Log in again")
    page.get_by_label("User").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Domain").fill(DOMAIN)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".live-state")).to_have_text("live")
    # Back where it was, working.
    expect(page.get_by_role("link", name="Objects")).to_have_attribute("aria-current", "page")
    expect(page.locator(".total")).to_have_text(re.compile(r"^\d+ hosts$"))
