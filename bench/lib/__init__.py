"""What the crdtmds benchmarks share, one concept per module.

The benchmarks run on shared, noisy machines, so each one measures the things it compares
side by side in one run (interleaved repetitions where it can) and reports ratios, which
stay meaningful when the absolute figures drift. Every script prints a table and writes
``bench/results/<name>.json`` (plus a PNG when matplotlib, the ``bench`` extra, is
installed).

- `command_line`: the options every script takes, running its entry point;
- `stats`, `timing`, `resources`, `report`: percentiles, timed calls, CPU and memory of
  processes, tables and result files;
- `workload`: an administrator's edits and publishes;
- `credentials`, `node_dirs`, `cluster`: servers in this process and in
  processes of their own (the proxies that delay their links are in
  `crdtmds.testing.delay_proxies`);
- `sync_codec`, `change_graph`, `sync_peer`, `observers`: the automerge-repo connections
  this process keeps to servers, to write to them and to watch them.

Importing the package puts the checkout's root and ``cli/`` on ``sys.path`` (and on the
``PYTHONPATH`` of the server processes started from here, which run
``python -m crdtmds_cli.main``), so the scripts run from a plain checkout:
``.venv/bin/python bench/<name>.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_ROOT = REPO_ROOT / "cli"
for _path in (CLI_ROOT, REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), str(CLI_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)
