"""The official JS SDK's realtime client across a restart of the runtime: the stream ends when the
runtime stops (it does not hold the stop up), the SDK reconnects to the next process on the same
port and resubmits its topics, and events flow again."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

JS_DIR = Path(__file__).resolve().parents[2] / "js"

# Subscribes to rt_restart/*, prints {"subscribed": true} (and {"connected": true} whenever the
# SDK has reconnected and resubmitted its topics); then for every line "create TITLE" on
# stdin creates a record and prints the event received for it ({"event": title}).
SCRIPT = r"""
import PocketBase from 'pocketbase';
import { EventSource } from 'undici';
import readline from 'node:readline';
globalThis.EventSource ??= EventSource;
const [url, token] = process.argv.slice(1);
const pb = new PocketBase(url);
pb.autoCancellation(false);
pb.authStore.save(token, null);
const waiting = new Map();
await pb.collection('rt_restart').subscribe('*', (e) => {
  const done = waiting.get(e.record.title);
  if (done) done(e.action);
});
await pb.realtime.subscribe('PB_CONNECT', () => console.log(JSON.stringify({ connected: true })));
console.log(JSON.stringify({ subscribed: true }));
for await (const line of readline.createInterface({ input: process.stdin })) {
  const title = line.replace(/^create /, '');
  const event = new Promise((resolve) => waiting.set(title, resolve));
  for (let i = 0; ; i++) {
    try { await pb.collection('rt_restart').create({ title }); break; }
    catch (err) { if (i > 100) throw err; await new Promise((r) => setTimeout(r, 100)); }
  }
  const late = new Promise((r) => setTimeout(() => r('timeout'), 15000));
  const action = await Promise.race([event, late]);
  console.log(JSON.stringify({ event: title, action }));
}
process.exit(0);
"""


@pytest.fixture
def runtime() -> Iterator[RuntimeProcess]:
    with RuntimeProcess.started() as process:
        yield process


def _line(node: subprocess.Popen[str]) -> dict[str, object]:
    assert node.stdout is not None
    line = node.stdout.readline()
    assert line, f"node ended: {node.stderr.read() if node.stderr else ''}"
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_the_sdk_reconnects_after_a_restart(runtime: RuntimeProcess) -> None:
    node_bin = shutil.which("node")
    if node_bin is None or not (JS_DIR / "node_modules").is_dir():
        pytest.fail("node or tests/js/node_modules missing: run scripts/install-system.sh")
    with runtime.client(superuser=True) as su:
        made = su.post(
            "/api/collections",
            json={
                "name": "rt_restart",
                "fields": [{"name": "title", "type": "text"}],
                "listRule": "",
                "viewRule": "",
            },
        )
        assert made.status_code == 200, made.text
    node = subprocess.Popen(
        [node_bin, "--input-type=module", "-e", SCRIPT, runtime.url, runtime.token()],
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _line(node) == {"subscribed": True}
        assert node.stdin is not None
        node.stdin.write("create before\n")
        node.stdin.flush()
        assert _line(node) == {"event": "before", "action": "create"}
        started = time.monotonic()
        runtime.stop()
        assert time.monotonic() - started < 4, "an open stream held up the stop"
        runtime.start()
        assert _line(node) == {"connected": True}
        node.stdin.write("create after\n")
        node.stdin.flush()
        assert _line(node) == {"event": "after", "action": "create"}
    finally:
        node.kill()
        node.wait(timeout=10)
