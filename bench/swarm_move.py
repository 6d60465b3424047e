"""Benchmark: the downtime of moving an instance between the two nodes of a swarm.

    .venv/bin/python bench/swarm_move.py [--moves 4] [--megabytes 100]

As root: a two-node swarm like the tests' (`tests/support/dockerd.py`: a manager on the host
and a worker in a network namespace, both labelled), `pocketfleet serve` with
`PF_DRIVER=swarm` on it (the worker's engine named in `PF_SWARM_NODE_ENGINES`), one PocketBase
instance created on the worker with a superuser. Printed, in one run:

- the baseline: a stop and start of the instance on its node through the API (`POST .../stop`,
  `POST .../start`, until its health answers through the proxy), `--moves` times;
- the downtime each move reports (`POST /api/instances/NAME/move`: from the stop to the first
  healthy answer on the target), `--moves` moves alternating worker -> manager -> worker,
  for the small instance and then with `--megabytes` of files added to its `pb_data/storage`;
- p50 and max per direction, and the ratio of a move to a restart.

The instance folder is on the one file system both nodes share (as in the tests): a move
copies no data, so its size changes little here; with a disk per node the copy would add
size / bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import httpx  # noqa: E402

from tests.support.dockerd import NetworkNamespace, PrivateDockerd, unavailable  # noqa: E402
from tests.support.server import BIN, ServeProcess, running_server, sign_up  # noqa: E402

PASSWORD = "a-long-password-1"
EMAIL = "bench-move@example.com"


def _healthy_after(server: ServeProcess, name: str, began: float) -> float:
    with server.instance_client(name) as pb:
        while True:
            try:
                if pb.get("/api/health").status_code == 200:
                    return (time.monotonic() - began) * 1000
            except httpx.HTTPError:
                pass
            time.sleep(0.01)


def restart_ms(server: ServeProcess, api: httpx.Client, name: str) -> float:
    began = time.monotonic()
    assert api.post(f"/api/instances/{name}/stop").json()["status"] == "stopped"
    assert api.post(f"/api/instances/{name}/start").json()["status"] == "running"
    return _healthy_after(server, name, began)


def move_ms(operator: httpx.Client, name: str, node: str) -> float:
    moved = operator.post(f"/api/instances/{name}/move", json={"node": node}, timeout=120)
    assert moved.status_code == 200, moved.text
    return float(moved.json()["downtime_ms"])


def summary(label: str, values: list[float]) -> str:
    return f"{label}: p50 {statistics.median(values):.0f} ms, max {max(values):.0f} ms"


def run(moves: int, megabytes: int) -> None:
    netns = NetworkNamespace()
    try:
        with PrivateDockerd() as manager, PrivateDockerd(netns=netns) as worker:
            manager_id = manager.init_swarm(netns.host_address)
            worker_id = worker.join_swarm(manager)
            env = {
                "PF_DRIVER": "swarm",
                "PF_DOCKER_HOST": manager.host,
                "PF_IDLE_TIMEOUT_S": "0",
                "PF_SWARM_NODE": worker_id,
                "PF_SWARM_NODE_ENGINES": json.dumps({worker_id: worker.host}),
            }
            with running_server(env=env) as server, server.client() as api:
                token = sign_up(api, EMAIL)
                api.headers["Authorization"] = f"Bearer {token}"
                subprocess.run(
                    [str(BIN / "pocketfleet"), "operator", "add", EMAIL],
                    env=server.env(), check=True, capture_output=True,
                )  # fmt: skip
                body = {"name": "moved", "superuser_password": PASSWORD}
                created = api.post("/api/instances", json=body)
                assert created.status_code == 201, created.text
                instance_id = created.json()["id"]
                assert api.post("/api/instances/moved/start").json()["status"] == "running"
                restarts = [restart_ms(server, api, "moved") for _ in range(moves)]
                print(summary("restart on its node (baseline)", restarts))
                for size in (0, megabytes):
                    if size:
                        storage = server.data_dir / "instances" / instance_id / "pb_data"
                        blob = storage / "storage" / "bench.bin"
                        blob.parent.mkdir(exist_ok=True)
                        with blob.open("wb") as out:
                            for _ in range(size):
                                out.write(os.urandom(1 << 20))
                        owner = storage.stat()
                        os.chown(blob.parent, owner.st_uid, owner.st_gid)
                        os.chown(blob, owner.st_uid, owner.st_gid)
                    away: list[float] = []
                    back: list[float] = []
                    for _ in range((moves + 1) // 2):  # ends on the worker
                        away.append(move_ms(api, "moved", manager_id))
                        back.append(move_ms(api, "moved", worker_id))
                    what = f"{size} MB added" if size else "small"
                    print(summary(f"move worker -> manager ({what})", away))
                    print(summary(f"move manager -> worker ({what})", back))
                    ratio = statistics.median(away + back) / statistics.median(restarts)
                    print(f"  move / restart ({what}): {ratio:.2f}x")
    finally:
        netns.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=4)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        sys.exit(f"cannot run: {why}")
    run(args.moves, args.megabytes)


if __name__ == "__main__":
    main()
