"""Servers' data directories: a fresh one with the bench administrator, and reading the
configuration (name, cluster id, secret, ...) stored in one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD


async def init_node_dir(data_dir: Path, name: str = "bench-1", *, port: int = 0) -> None:
    """A fresh Primary server's data directory, with the bench superuser."""
    from crdtmds.bootstrap import init_cluster

    url = f"ws://127.0.0.1:{port}" if port else ""
    await init_cluster(
        data_dir,
        name=name,
        listen_host="127.0.0.1",
        listen_port=port,
        url=url,
        region="bench",
        admin=BENCH_ADMIN,
        password=BENCH_PASSWORD,
    )


async def read_node_config(data_dir: Path) -> dict[str, Any]:
    """A server's stored configuration (name, cluster id, secret, ...) from its data dir."""
    from crdtmds.config import CONFIG_KEY, DATABASE_FILE
    from crdtmds.storage import Storage

    storage = await Storage.open(data_dir / DATABASE_FILE)
    try:
        config = await storage.get_meta(CONFIG_KEY)
    finally:
        await storage.close()
    if not isinstance(config, dict):
        raise RuntimeError(f"{data_dir} holds no server configuration")
    return config
