"""A tenant plants symbolic links to another tenant's database in its own folder (from its
hook: `ln -s`, the sandbox shows it no such path but a link may point anywhere) and has the
control plane, which runs as root, back the folder up and restore it: the link in `pb_public/`
is left out of its snapshot, its `pb_data/data.db` replaced by a link makes the snapshot
refused, and neither a restore from a snapshot nor one to a point in time carries a linked
file over. The other tenant's records never reach the attacker's archive or folder."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.security.hostile import Hostile, Tenant, Victim, eventually, unique


def link_to_victim(hostile: Hostile, victim: Victim, *, database: bool) -> None:
    """From the hook: links to the victim's database (and WAL, and folder) in `pb_public/`,
    and with `database`, in place of its own `pb_data/data.db` and WAL too."""
    db = victim.instance.database
    script = [
        f"ln -s {db} pb_public/stolen.db",
        f"ln -s {db}-wal pb_public/stolen.db-wal",
        f"ln -s {victim.instance.folder} pb_public/stolen-folder",
        f"mkdir -p pb_data/storage && ln -s {db} pb_data/storage/stolen.db",
    ]
    if database:
        script += [f"ln -sf {db} pb_data/data.db", f"ln -sf {db}-wal pb_data/data.db-wal"]
    shell = hostile.sh(" && ".join(script))
    assert shell.code == 0, shell.output
    assert os.readlink(hostile.instance.folder / "pb_public" / "stolen.db") == str(db)


def snapshot(tenant: Tenant, name: str) -> dict[str, object]:
    answer = tenant.api.post(f"/api/instances/{name}/backups")
    assert answer.status_code in (201, 422), answer.text
    body: dict[str, object] = answer.json()
    return body


def download(tenant: Tenant, name: str, snapshot_id: object) -> dict[str, bytes]:
    """Every regular file of the archive: member name -> content."""
    answer = tenant.api.get(f"/api/instances/{name}/backups/{snapshot_id}/download")
    assert answer.status_code == 200, answer.text[:300]
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as archive:
        for member in archive.getmembers():
            assert member.isfile() or member.isdir(), f"{member.name}: not a file"
            extracted = archive.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[member.name] = extracted.read()
    return files


def assert_no_secret_in(files: dict[str, bytes], victim: Victim) -> None:
    holding = [name for name, data in files.items() if victim.secret.encode() in data]
    assert not holding, f"the victim's record is in {holding}"
    assert not [name for name in files if "stolen" in name], sorted(files)


def folder_files(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """The regular files of an instance folder (relative name -> content) and its links, read
    as root without following any link."""
    files: dict[str, bytes] = {}
    links: list[str] = []
    for parent, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            path = Path(parent, name)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                links.append(rel)
            elif path.is_file():
                files[rel] = path.read_bytes()
    return files, links


def restore_outcome(tenant: Tenant, name: str, answer_json: dict[str, object]) -> None:
    assert answer_json["status"] == "done", answer_json
    tenant.wait_status(name, "running")


@pytest.fixture
def linker(attacker_tenant: Tenant, victim: Victim) -> Hostile:
    """A fresh attacker's instance (these attacks break its own folder on purpose)."""
    assert victim.secret.encode() in victim.database_bytes()  # what a followed link would give
    return Hostile.create(attacker_tenant, unique("linker"))


def test_linked_files_are_left_out_of_a_snapshot(linker: Hostile, victim: Victim) -> None:
    link_to_victim(linker, victim, database=False)
    name = linker.instance.name
    snap = snapshot(linker.tenant, name)
    assert snap["status"] == "good", snap
    assert "left out" in str(snap["reason"]) and "stolen.db" in str(snap["reason"]), snap
    files = download(linker.tenant, name, snap["id"])
    assert "pb_hooks/attack.pb.js" in files  # its own files are there
    assert_no_secret_in(files, victim)
    linker.assert_alive()


def test_a_database_replaced_by_a_link_is_not_snapshotted(linker: Hostile, victim: Victim) -> None:
    link_to_victim(linker, victim, database=True)
    name = linker.instance.name
    snap = snapshot(linker.tenant, name)
    if snap.get("status") == "good":  # a snapshot without the linked database would do too
        assert_no_secret_in(download(linker.tenant, name, snap["id"]), victim)
    else:
        assert snap["code"] == "snapshot_refused" and "data.db" in str(snap["detail"]), snap
    listed = linker.tenant.api.get(f"/api/instances/{name}/backups").json()["snapshots"]
    for row in listed:
        if row["status"] == "good":
            assert_no_secret_in(download(linker.tenant, name, row["id"]), victim)
    linker.assert_alive()  # its PocketBase still has its own database open


def test_a_restore_carries_no_linked_file_over(linker: Hostile, victim: Victim) -> None:
    name = linker.instance.name
    clean = snapshot(linker.tenant, name)
    assert clean["status"] == "good", clean
    link_to_victim(linker, victim, database=True)
    log = linker.instance.folder / "output.log"
    shell = linker.sh(f"ln -sf {victim.instance.database} {log}")  # the log is carried over
    assert shell.code == 0, shell.output

    restored = linker.tenant.api.post(f"/api/instances/{name}/backups/{clean['id']}/restore")
    assert restored.status_code == 200, restored.text
    restore_outcome(linker.tenant, name, restored.json())

    files, links = folder_files(linker.instance.folder)
    assert links == [], links
    assert not [rel for rel, data in files.items() if victim.secret.encode() in data]
    assert "pb_hooks/attack.pb.js" in files
    linker.assert_alive()


def test_a_point_in_time_restore_carries_no_linked_file_over(
    linker: Hostile, victim: Victim
) -> None:
    name, tenant = linker.instance.name, linker.tenant

    def restorable_to() -> str | None:
        window: str | None = tenant.api.get(f"/api/instances/{name}/backups").json()[
            "restorable_to"
        ]
        return window

    eventually(lambda: restorable_to() is not None, 60, "the attacker's database is replicated")
    link_to_victim(linker, victim, database=True)
    at = restorable_to()
    assert at is not None
    answer = tenant.api.post(f"/api/instances/{name}/restore", json={"at": at})
    assert answer.status_code == 200, answer.text
    restore_outcome(tenant, name, answer.json())
    files, links = folder_files(linker.instance.folder)
    assert links == [], links
    assert not [rel for rel, data in files.items() if victim.secret.encode() in data]
    assert "pb_hooks/attack.pb.js" in files
    linker.assert_alive()
