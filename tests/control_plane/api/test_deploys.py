"""Deploys against a real server and a real PocketBase instance (issue 14, "Deploys"): a folder
with a hook, a migration and a page is deployed and served; a broken hook fails with the
engine's own error while the instance keeps serving the previous deploy; rollback; the CLI
from a clean environment with only `PF_URL` + `PF_TOKEN`; refusals of bad archives."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, running_server, sign_up

HOOK = 'routerAdd("GET", "/hello", (e) => e.string(200, "hi"))\n'
BROKEN_HOOK = 'routerAdd("GET", "/hello", (e) => { e.string(200, "broken" \n'
MIGRATION = """migrate((app) => {
  const c = new Collection({type: "base", name: "notes", listRule: "",
                            fields: [{name: "title", type: "text"}]});
  app.save(c);
}, (app) => {
  app.delete(app.findCollectionByNameOrId("notes"));
});
"""
PAGE = "<h1>deployed</h1>\n"
GZIP = {"Content-Type": "application/gzip"}

_ids = itertools.count()


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"  # deploys are the same over either control database


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server(env={"PF_DEPLOYS_KEEP": "3", "PF_DEFAULT_QUOTA": "40"}) as server:
        yield server


class Owner:
    def __init__(self, serve: ServeProcess) -> None:
        self.api = serve.client()
        self.token = sign_up(self.api, f"deploys{next(_ids)}@example.com")
        self.api.headers["Authorization"] = f"Bearer {self.token}"

    def instance(self, *, start: bool = True) -> str:
        name = f"dep{next(_ids)}"
        assert self.api.post("/api/instances", json={"name": name}).status_code == 201
        action, state = ("start", "running") if start else ("stop", "stopped")
        done = self.api.post(f"/api/instances/{name}/{action}")
        assert done.status_code == 200 and done.json()["status"] == state, done.text
        return name


@pytest.fixture(scope="module")
def owner(serve: ServeProcess) -> Iterator[Owner]:
    person = Owner(serve)
    yield person
    person.api.close()


def tar_of(files: dict[str, str | bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, text in files.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


GOOD = {
    "pb_hooks/hello.pb.js": HOOK,
    "pb_migrations/1_notes.js": MIGRATION,
    "pb_public/index.html": PAGE,
}


def deploy(owner: Owner, name: str, body: bytes, **params: str) -> httpx.Response:
    return owner.api.post(
        f"/api/instances/{name}/deploys", content=body, headers=GZIP, params=params
    )


def poll(get: Any, check: Any, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response: httpx.Response = get()
            if check(response):
                return response
        except httpx.TransportError:
            response = None  # type: ignore[assignment]
        assert time.monotonic() < deadline, response.text if response is not None else "none"
        time.sleep(0.2)


def assert_serves_good(serve: ServeProcess, name: str) -> None:
    with serve.instance_client(name) as site:
        hello = poll(lambda: site.get("/hello"), lambda r: r.text == "hi")
        assert hello.status_code == 200
        notes = site.get("/api/collections/notes/records")
        assert notes.status_code == 200, notes.text
        assert notes.json()["items"] == []
        page = site.get("/")
        assert page.status_code == 200 and page.text == PAGE


def test_deploy_fail_and_rollback(serve: ServeProcess, owner: Owner) -> None:
    name = owner.instance()
    first = deploy(owner, name, tar_of(GOOD))
    assert first.status_code == 201, first.text
    row = first.json()
    assert row["status"] == "done" and row["started"] is True
    assert row["file_count"] == 3 and set(row["manifest"]) == set(GOOD)
    assert_serves_good(serve, name)
    instance_id = owner.api.get(f"/api/instances/{name}").json()["id"]
    kept = serve.data_dir / "deploys" / instance_id / f"{row['id']}.tar.gz"
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.stat().st_uid == 0

    # a second deploy with a broken hook: refused by the engine, the first serves again
    broken = {**GOOD, "pb_hooks/hello.pb.js": BROKEN_HOOK, "pb_public/index.html": "new"}
    second = deploy(owner, name, tar_of(broken))
    assert second.status_code == 422, second.text
    body = second.json()
    assert body["code"] == "deploy_failed"
    assert "hello.pb.js" in body["detail"] or "SyntaxError" in body["detail"], body
    assert "last good deploy" in body["detail"]
    assert_serves_good(serve, name)
    history = owner.api.get(f"/api/instances/{name}/deploys").json()
    assert [d["status"] for d in history] == ["failed", "done"]
    assert history[0]["log"]

    # a third, good deploy replaces everything (no keep): only the page
    third = deploy(owner, name, tar_of({"pb_public/index.html": "third"}))
    assert third.status_code == 201, third.text
    with serve.instance_client(name) as site:
        assert site.get("/").text == "third"
        assert site.get("/hello").text != "hi"  # pb_public's index.html (its fallback)
    root = serve.data_dir / "instances" / instance_id
    assert not (root / "pb_hooks" / "hello.pb.js").exists()

    # rollback (default: the previous good deploy, the first)
    back = owner.api.post(f"/api/instances/{name}/deploys/previous/rollback")
    assert back.status_code == 201, back.text
    assert back.json()["rollback_of"] == row["id"]
    assert_serves_good(serve, name)
    one = owner.api.get(f"/api/instances/{name}/deploys/{back.json()['id']}")
    assert one.status_code == 200 and one.json()["status"] == "done"


def test_keep_keeps_what_the_archive_lacks(serve: ServeProcess, owner: Owner) -> None:
    name = owner.instance(start=False)
    first = deploy(owner, name, tar_of({"pb_public/a.txt": "a", "pb_hooks/x.pb.js": "// x"}))
    assert first.status_code == 201, first.text
    assert first.json()["started"] is False and first.json()["status"] == "done"
    kept = deploy(owner, name, tar_of({"pb_public/b.txt": "b"}), keep="true")
    assert kept.status_code == 201, kept.text
    assert set(kept.json()["manifest"]) == {
        "pb_public/a.txt",
        "pb_public/b.txt",
        "pb_hooks/x.pb.js",
    }
    instance_id = owner.api.get(f"/api/instances/{name}").json()["id"]
    root = serve.data_dir / "instances" / instance_id
    assert (root / "pb_public" / "a.txt").read_text() == "a"
    assert (root / "pb_hooks" / "x.pb.js").exists()
    uid = (root / "pb_public" / "b.txt").stat().st_uid
    assert uid == root.stat().st_uid  # the instance's (it may never have started: no pb_data)
    assert uid != 0 or os.geteuid() != 0
    # PF_DEPLOYS_KEEP=3: older archives are removed
    for n in range(3):
        assert deploy(owner, name, tar_of({"pb_public/n.txt": str(n)})).status_code == 201
    history = owner.api.get(f"/api/instances/{name}/deploys").json()
    assert [d["can_roll_back"] for d in history] == [True, True, True, False, False]
    assert len(list((serve.data_dir / "deploys" / instance_id).iterdir())) == 3


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("files", "extra", "member"),
    [
        ({"pb_data/data.db": "x"}, [], "pb_data/data.db"),
        ({"../escape": "x"}, [], "../escape"),
        ({"/abs/file": "x"}, [], "/abs/file"),
        ({}, [_link("pb_public/link", tarfile.SYMTYPE)], "pb_public/link"),
        ({}, [_link("pb_public/dev", tarfile.CHRTYPE)], "pb_public/dev"),
    ],
)
def test_bad_archives_are_refused_naming_the_member(
    serve: ServeProcess,
    owner: Owner,
    files: dict[str, str],
    extra: list[tarfile.TarInfo],
    member: str,
) -> None:
    name = owner.instance(start=False)
    refused = deploy(owner, name, tar_of({"pb_public/ok": "ok", **files}, extra))
    assert refused.status_code == 422, refused.text + serve.output()[-3000:]
    assert member in refused.json()["detail"]
    assert owner.api.get(f"/api/instances/{name}/deploys").json() == []


def test_another_tenant_gets_404(serve: ServeProcess, owner: Owner) -> None:
    name = owner.instance(start=False)
    other = Owner(serve)
    assert deploy(other, name, tar_of({"pb_public/a": "a"})).status_code == 404
    assert other.api.get(f"/api/instances/{name}/deploys").status_code == 404


def test_cli_from_a_clean_environment(serve: ServeProcess, owner: Owner, tmp_path: Path) -> None:
    name = owner.instance()
    created = owner.api.post(
        "/api/tokens", json={"name": "ci", "scope": "deploy", "instances": [name]}
    )
    assert created.status_code == 201, created.text
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PF_URL": serve.url,
        "PF_TOKEN": created.json()["token"],
        "COLUMNS": "200",
    }
    site = write_tree(tmp_path / "site", {**GOOD, "notes.txt": "not sent"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pocketfleet"), *args],
            env=env,
            cwd=site,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = cli("deploy", name)  # DIR defaults to .
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done" in done.stdout and "3 files" in done.stdout
    assert_serves_good(serve, name)

    (site / "pb_hooks" / "hello.pb.js").write_text(BROKEN_HOOK)
    failed = cli("deploy", name, ".")
    assert failed.returncode != 0
    assert "last good deploy" in failed.stderr.replace("\n", " ")
    assert_serves_good(serve, name)

    listed = cli("deploys", "ls", name)
    assert listed.returncode == 0 and "failed" in listed.stdout and "done" in listed.stdout

    (site / "pb_hooks" / "hello.pb.js").write_text(HOOK)
    (site / "pb_public" / "index.html").write_text("second")
    changed = cli("deploy", name)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "sending 1 of 3 files" in changed.stdout  # the hook is live again: not sent
    with serve.instance_client(name) as page:
        assert page.get("/").text == "second"
    again = cli("deploy", name)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout
    back = cli("deploy", name, "--rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert_serves_good(serve, name)


FAILING_MIGRATION = """migrate((app) => {
  throw new Error("migration 2 refuses on purpose");
});
"""


def test_a_failing_migration_fails_the_deploy_and_the_last_good_one_serves(
    serve: ServeProcess, owner: Owner
) -> None:
    name = owner.instance()
    assert deploy(owner, name, tar_of(GOOD)).status_code == 201
    failing = deploy(owner, name, tar_of({**GOOD, "pb_migrations/2_fails.js": FAILING_MIGRATION}))
    assert failing.status_code == 422, failing.text
    assert failing.json()["code"] == "deploy_failed"
    assert "migration 2 refuses on purpose" in failing.json()["detail"], failing.json()
    assert_serves_good(serve, name)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_tar(files: dict[str, str], sent: dict[str, str], **extra: object) -> bytes:
    """A deploy archive with a manifest of `files` that carries only `sent`."""
    declared = json.dumps({"files": {rel: sha(text) for rel, text in files.items()}, **extra})
    return tar_of({"pocketfleet-manifest.json": declared, **sent})


def plan(owner: Owner, name: str, files: dict[str, str], **extra: object) -> httpx.Response:
    body = {"files": {rel: sha(text) for rel, text in files.items()}, **extra}
    return owner.api.post(f"/api/instances/{name}/deploys/plan", json=body)


def test_a_deploy_sends_only_the_contents_the_instance_lacks(
    serve: ServeProcess, owner: Owner
) -> None:
    name = owner.instance(start=False)
    files = {f"pb_public/page{n}.html": f"page {n}" for n in range(5)}
    first = plan(owner, name, files)
    assert first.status_code == 200, first.text
    assert sorted(first.json()["missing"]) == sorted(sha(t) for t in files.values())
    assert deploy(owner, name, manifest_tar(files, files)).status_code == 201

    # one page changed, one removed, one renamed (its content is live: not sent)
    wanted = {k: v for k, v in files.items() if k not in ("pb_public/page3.html",)}
    wanted["pb_public/page0.html"] = "page 0, second edition"
    wanted["pb_public/moved/page4.html"] = wanted.pop("pb_public/page4.html")
    second = plan(owner, name, wanted).json()
    assert second["missing"] == [sha("page 0, second edition")]
    assert second["changed"] == ["pb_public/page0.html"]
    assert second["added"] == ["pb_public/moved/page4.html"]
    assert second["removed"] == ["pb_public/page3.html", "pb_public/page4.html"]
    assert second["unchanged"] == 2
    sent = {"pb_public/page0.html": wanted["pb_public/page0.html"]}
    done = deploy(owner, name, manifest_tar(wanted, sent))
    assert done.status_code == 201, done.text
    assert done.json()["manifest"] == {rel: sha(text) for rel, text in sorted(wanted.items())}
    instance_id = owner.api.get(f"/api/instances/{name}").json()["id"]
    public = serve.data_dir / "instances" / instance_id / "pb_public"
    assert (public / "page0.html").read_text() == "page 0, second edition"
    assert (public / "moved" / "page4.html").read_text() == "page 4"
    assert not (public / "page3.html").exists() and not (public / "page4.html").exists()
    # with keep, nothing is removed
    kept = plan(owner, name, {"pb_public/new.html": "new"}, keep=True).json()
    assert kept["removed"] == [] and kept["added"] == ["pb_public/new.html"]


@pytest.mark.parametrize(
    ("files", "sent", "extra", "status", "words"),
    [
        # the archive carries a file the manifest does not name
        ({"pb_public/a": "a"}, {"pb_public/a": "a", "pb_public/b": "b"}, {}, 422, "pb_public/b"),
        # a member whose content is not the one the manifest names
        ({"pb_public/a": "a"}, {"pb_public/a": "not a"}, {}, 422, "pb_public/a"),
        # a content neither sent nor live: the plan is stale
        ({"pb_public/a": "a", "pb_public/c": "never sent"}, {"pb_public/a": "a"}, {}, 409, "c"),
        # the manifest names paths the rules refuse
        ({"pb_data/data.db": "x"}, {}, {}, 422, "pb_data"),
        ({"pb_public/../../x": "x"}, {}, {}, 422, "manifest"),
        ({"pb_public/a": "a"}, {"pb_public/a": "a"}, {"folders": ["/etc"]}, 422, "/etc"),
    ],
)
def test_bad_manifests_are_refused(
    serve: ServeProcess,
    owner: Owner,
    files: dict[str, str],
    sent: dict[str, str],
    extra: dict[str, object],
    status: int,
    words: str,
) -> None:
    name = owner.instance(start=False)
    refused = deploy(owner, name, manifest_tar(files, sent, **extra))
    assert refused.status_code == status, refused.text
    assert words in refused.json()["detail"], refused.json()
    if status == 409:
        assert refused.json()["code"] == "stale_plan"
    assert owner.api.get(f"/api/instances/{name}/deploys").json() == []


def test_plans_refuse_bad_manifests_and_other_tenants(serve: ServeProcess, owner: Owner) -> None:
    name = owner.instance(start=False)
    url = f"/api/instances/{name}/deploys/plan"
    assert owner.api.post(url, json={"files": {"pb_public/a": "not-a-hash"}}).status_code == 422
    assert owner.api.post(url, json={"files": {"../a": sha("a")}}).status_code == 422
    assert owner.api.post(url, json={"files": []}).status_code == 422
    not_json = owner.api.post(url, content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code in (400, 422)
    broken = tar_of({"pocketfleet-manifest.json": "{not json", "pb_public/a": "a"})
    assert deploy(owner, name, broken).status_code == 422
    other = Owner(serve)
    assert other.api.post(url, json={"files": {}}).status_code == 404


def test_watch_deploys_every_change(serve: ServeProcess, owner: Owner, tmp_path: Path) -> None:
    name = owner.instance()
    created = owner.api.post("/api/tokens", json={"name": "watch"})
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PF_URL": serve.url,
        "PF_TOKEN": created.json()["token"],
    }
    site = write_tree(tmp_path / "site", {"pb_public/index.html": "first"})
    watcher = subprocess.Popen(
        [str(BIN / "pocketfleet"), "deploy", name, str(site), "--watch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert watcher.stdout is not None
    lines: list[str] = []
    for line in watcher.stdout:  # the first deploy, then the watch begins
        lines.append(line)
        if line.startswith("watching"):
            break
    try:
        with serve.instance_client(name) as page:
            assert page.get("/").text == "first", "".join(lines)
            for _ in range(30):  # (written again: the watch may have begun after a write)
                (site / "pb_public" / "index.html").write_text("edited")
                with contextlib.suppress(AssertionError):
                    poll(lambda: page.get("/"), lambda r: r.text == "edited", timeout=3)
                    break
            assert page.get("/").text == "edited", "".join(lines)
    finally:
        watcher.send_signal(signal.SIGINT)
        rest, _ = watcher.communicate(timeout=30)
    output = "".join(lines) + rest
    assert "watching" in output and "sending 1 of 1 files" in output, output


def test_a_hibernated_instance_is_woken_to_check_the_deploy_and_sleeps_again(
    serve: ServeProcess, owner: Owner
) -> None:
    name = owner.instance()
    slept = owner.api.post(f"/api/instances/{name}/hibernate")
    assert slept.status_code == 200 and slept.json()["status"] == "hibernated", slept.text

    broken = deploy(owner, name, tar_of({**GOOD, "pb_hooks/hello.pb.js": BROKEN_HOOK}))
    assert broken.status_code == 422, broken.text  # found now, not at the next wake
    assert broken.json()["code"] == "deploy_failed"

    good = deploy(owner, name, tar_of(GOOD))
    assert good.status_code == 201, good.text
    assert good.json()["started"] is True and "sleeps again" in good.json()["message"]
    poll(
        lambda: owner.api.get(f"/api/instances/{name}"),
        lambda r: r.json()["status"] == "hibernated",
    )
    assert_serves_good(serve, name)  # woken by the request, on the deploy
