"""The console's rulebase at 10,000 rules next to 10 rules, in the same headless browser.

One real server process with a Web API (and so the console), two domains: *big* with
``--rules`` access rules (a section every 1,000) and *small* with 10. For each
repetition and each domain, in an order reversed every other repetition, a fresh browser
context (cold cache) opens ``/#/rulebase`` already logged in (the sid is put in the
tab's sessionStorage before the page runs) and the page reports, by its own clock:

- *first rows*: navigation start -> the frame after the first rows in view are in the
  DOM with their data (``window.crdRowsPainted``);
- *scroll to last*: the scroller jumped to its end -> the last rule's row is on screen
  with its data (timed inside the page, one animation frame at a time).

The duration of each Web API call the page made before its first rows is listed too
(request sent -> reply read, by the page's resource timing).

Targets: first rows < 1 s at 10,000 rules, and at most 2x the 10-rule figure.
Browser: Debian's chromium (``/usr/bin/chromium``) driven by Playwright.

    .venv/bin/python bench/console.py [--rules 10000] [--reps 7]
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lib.cluster import BenchCluster
from lib.command_line import base_parser, run
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD
from lib.report import print_table, verdict, write_results
from lib.stats import median, ratio

from crdtmds.client import Client
from crdtmds.status_query import query_status

NAME = "console"
CHROMIUM = "/usr/bin/chromium"
TARGET_FIRST_ROWS_MS = 1000.0
TARGET_RATIO = 2.0
SECTION_EVERY = 1000
WEB_API_CALLS = """() => Object.fromEntries(performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/web_api/') && e.startTime < window.crdRowsPainted)
  .map((e) => [e.name.split('/').pop(), e.duration]))"""
"""The duration of each Web API call made before the first rows (the last of a name)."""
SCROLL_TO_LAST = """async (total) => {
  const scroller = document.querySelector('crd-rulebase .scroller');
  const started = performance.now();
  scroller.scrollTop = scroller.scrollHeight;
  for (;;) {
    await new Promise((done) => requestAnimationFrame(done));
    const row = document.querySelector(`.row.rule[data-number="${total}"]`);
    if (row) return performance.now() - started;
    if (performance.now() - started > 30000) return NaN;
  }
}"""


def parse_args() -> Any:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=10_000, help="rules of the big layer")
    parser.add_argument("--reps", type=int, default=7, help="page loads per layer")
    return parser.parse_args()


async def fill(server_url: str, domain: str, rules: int) -> None:
    """`rules` rules in one session, a section every SECTION_EVERY, published once."""
    async with Client([server_url], user=BENCH_ADMIN, password=BENCH_PASSWORD) as admin:
        await admin.call("add-domain", name=domain)
    async with Client(
        [server_url], user=BENCH_ADMIN, password=BENCH_PASSWORD, domain=domain
    ) as session:
        for number in range(1, rules + 1):
            if number % SECTION_EVERY == 1 and number > 1:
                await session.call(
                    "add-access-section", layer="Network", position="bottom",
                    name=f"section {number // SECTION_EVERY}",
                )  # fmt: skip
            await session.call(
                "add-access-rule", layer="Network", position="bottom", name=f"rule {number}",
                action="Accept" if number % 2 else "Drop", comments=f"bench rule {number}",
            )  # fmt: skip
        await session.call("publish")


def web_login(web_url: str, domain: str) -> str:
    """A sid of a login to `domain` over the Web API (the certificate is self-signed)."""
    parts = urlsplit(web_url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context)
    body = {"user": BENCH_ADMIN, "password": BENCH_PASSWORD, "domain": domain}
    connection.request("POST", "/web_api/login", json.dumps(body),
                       {"Content-Type": "application/json"})  # fmt: skip
    reply = json.loads(connection.getresponse().read())
    connection.close()
    return str(reply["sid"])


def browse(web_url: str, layers: dict[str, tuple[str, int]], reps: int) -> dict[str, Any]:
    """Per domain, the first-rows and scroll-to-last times (ms) of every repetition."""
    from playwright.sync_api import sync_playwright

    samples: dict[str, dict[str, list[float]]] = {
        d: {"first rows": [], "scroll to last": []} for d in layers
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for rep in range(reps):
                order = list(layers) if rep % 2 == 0 else list(reversed(layers))
                for domain in order:
                    sid, total = layers[domain]
                    first, scroll, calls = load_once(browser, web_url, domain, sid, total)
                    samples[domain]["first rows"].append(first)
                    samples[domain]["scroll to last"].append(scroll)
                    for command, duration in calls.items():
                        samples[domain].setdefault(command, []).append(duration)
        finally:
            browser.close()
    return samples


def load_once(
    browser: Any, web_url: str, domain: str, sid: str, total: int
) -> tuple[float, float, dict[str, float]]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 850})
    login = json.dumps({"sid": sid, "user": BENCH_ADMIN, "domain": domain, "server": "s1"})
    context.add_init_script(
        f"sessionStorage.setItem('crdtmds.console.login', {json.dumps(login)});"
    )
    page = context.new_page()
    try:
        page.goto(web_url + "/#/rulebase", wait_until="commit")
        page.wait_for_function("() => window.crdRowsPainted !== undefined", timeout=30_000)
        first = float(page.evaluate("() => window.crdRowsPainted"))
        calls = page.evaluate(WEB_API_CALLS)
        scroll = float(page.evaluate(SCROLL_TO_LAST, total))
    finally:
        context.close()
    return first, scroll, calls


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-console-") as tmp:
        cluster = BenchCluster(Path(tmp), 1)
        cluster.servers[0].start_args = ["--web-api", "127.0.0.1:0"]
        cluster.start()
        try:
            server = cluster.servers[0]
            status = await query_status(
                server.url, timeout=5.0, credentials=(BENCH_ADMIN, BENCH_PASSWORD)
            )
            web_url = status["web-api"]["url"]
            started = time.monotonic()
            await fill(server.url, "big", args.rules)
            await fill(server.url, "small", 10)
            print(f"filled {args.rules} + 10 rules in {time.monotonic() - started:.0f} s")
            layers = {
                "big": (web_login(web_url, "big"), args.rules),
                "small": (web_login(web_url, "small"), 10),
            }
            samples = await asyncio.to_thread(browse, web_url, layers, args.reps)
        finally:
            cluster.stop()
    report(args, samples)


def report(args: Any, samples: dict[str, dict[str, list[float]]]) -> None:
    rows = []
    results: dict[str, Any] = {}
    steps = ["first rows", "scroll to last"]
    steps += sorted({k for d in samples.values() for k in d} - set(steps))  # Web API calls
    for step in steps:
        big, small = (_median_or_nan(samples[d].get(step, [])) for d in ("big", "small"))
        rows.append([step, small, big, ratio(big, small)])
        results[step] = {"10 rules ms": small, f"{args.rules} rules ms": big,
                         "ratio": ratio(big, small),
                         "samples": {d: samples[d].get(step, []) for d in samples}}  # fmt: skip
    print_table(
        f"console rulebase, median of {args.reps} cold page loads (ms)",
        ["step", "10 rules", f"{args.rules} rules", "ratio"],
        rows,
    )
    first_big = results["first rows"][f"{args.rules} rules ms"]
    first_ratio = results["first rows"]["ratio"]
    met = verdict(first_big, TARGET_FIRST_ROWS_MS, at_least=False)
    print(f"first rows at {args.rules} rules: {first_big:.0f} ms "
          f"(target < {TARGET_FIRST_ROWS_MS:.0f} ms: {met})")  # fmt: skip
    print(f"ratio to 10 rules: {first_ratio:.2f} (target <= {TARGET_RATIO}: "
          f"{verdict(first_ratio, TARGET_RATIO, at_least=False)})")  # fmt: skip
    write_results(
        args.out, NAME, parameters={"rules": args.rules, "reps": args.reps}, results=results,
        targets={"first rows ms": TARGET_FIRST_ROWS_MS, "ratio": TARGET_RATIO},
    )  # fmt: skip


def _median_or_nan(values: list[float]) -> float:
    return median(values) if values else float("nan")


if __name__ == "__main__":
    run(main)
