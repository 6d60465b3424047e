"""The SFTP server of `pocketfleet serve` with OpenSSH's real `sftp`, `scp` and `ssh` clients
(issue 14): the three code folders and nothing else, as the instance's uid, through the files
layer's rules; logins by the owner's keys only; no shell, exec or forwarding."""

from __future__ import annotations

import io
import itertools
import os
import signal
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psutil
import pytest

from tests.support.ports import free_port
from tests.support.server import BIN, ServeProcess, running_server, scratch_dir, sign_up

_ids = itertools.count()
MAX_FILE_MB = 2


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}{os.getpid() % 1000}"


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"  # SFTP does not depend on the control database's kind


@pytest.fixture(scope="module")
def sftp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def serve(sftp_port: int) -> Iterator[ServeProcess]:
    env = {"PF_SFTP": f"127.0.0.1:{sftp_port}", "PF_FILES_MAX_FILE_MB": str(MAX_FILE_MB)}
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = scratch_dir("pf-sftp-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def keygen(work: Path, kind: str = "ed25519") -> Path:
    key = work / unique("id_")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{key.name}@test", "-f", str(key)],
        check=True,
    )
    return key


class Owner:
    def __init__(self, serve: ServeProcess, work: Path) -> None:
        self.serve = serve
        self.api = serve.client()
        self.api.headers["Authorization"] = (
            f"Bearer {sign_up(self.api, unique('sftp') + '@example.com')}"
        )
        self.key = keygen(work)
        self.instances: dict[str, str] = {}

    def create(self, name: str) -> str:
        assert self.api.post("/api/instances", json={"name": name}).status_code == 201
        started = self.api.post(f"/api/instances/{name}/start")
        assert started.json()["status"] == "running", started.text
        self.instances[name] = started.json()["id"]
        return name

    def add_key(self, key: Path, **extra: object) -> dict[str, object]:
        body = {"public_key": key.with_suffix(".pub").read_text(), **extra}
        added = self.api.post("/api/ssh-keys", json=body)
        assert added.status_code == 201, added.text
        row: dict[str, object] = added.json()
        return row

    def root(self, name: str) -> Path:
        return self.serve.data_dir / "instances" / self.instances[name]


@pytest.fixture(scope="module")
def owner(serve: ServeProcess, work: Path) -> Iterator[Owner]:
    person = Owner(serve, work)
    person.create(unique("sftpa"))
    person.create(unique("sftpb"))
    person.add_key(person.key)
    yield person
    person.api.close()


@pytest.fixture(scope="module")
def known_hosts(serve: ServeProcess, owner: Owner, sftp_port: int, work: Path) -> Path:
    """The host key as the API gives it, in a known_hosts file (strict checking: a wrong
    fingerprint fails every connection)."""
    host = owner.api.get("/api/ssh-keys/host").json()
    assert host["port"] == sftp_port
    path = work / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sftp_port} {host['public_key']}\n")
    return path


def ssh_options(port: int, key: Path, known_hosts: Path | None) -> list[str]:
    hosts = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    if known_hosts is None:
        hosts = ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
    return [
        "-F", "/dev/null", "-i", str(key), *hosts,
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
    ]  # fmt: skip


class Sftp:
    def __init__(self, port: int, known_hosts: Path, work: Path) -> None:
        self.port = port
        self.known_hosts = known_hosts
        self.work = work

    def __call__(
        self, name: str, key: Path, commands: str, *, ok: bool | None = True
    ) -> subprocess.CompletedProcess[str]:
        """Run sftp's batch `commands`; `ok`: it must succeed (True), fail (False), either
        (None)."""
        result = subprocess.run(
            ["sftp", "-b", "-", "-P", str(self.port),
             *ssh_options(self.port, key, self.known_hosts), f"{name}@127.0.0.1"],
            input=commands, capture_output=True, text=True, timeout=120, cwd=self.work,
        )  # fmt: skip
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        elif ok is False:
            assert result.returncode != 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def sftp(sftp_port: int, known_hosts: Path, work: Path) -> Sftp:
    return Sftp(sftp_port, known_hosts, work)


def names(listing: str) -> set[str]:
    return {line.strip().rstrip("/").rsplit("/", 1)[-1] for line in listing.splitlines()
            if line.strip() and not line.startswith("sftp>")}  # fmt: skip


# ----- the code folders


def test_the_root_shows_the_three_code_folders_and_nothing_else(owner: Owner, sftp: Sftp) -> None:
    name = next(iter(owner.instances))
    listed = sftp(name, owner.key, "ls -1a /\n").stdout
    assert names(listed) == {"pb_hooks", "pb_migrations", "pb_public"}
    assert "pb_data" not in listed and "output.log" not in listed


def test_put_get_rm_mkdir_rename_and_the_page_is_served(
    owner: Owner, sftp: Sftp, serve: ServeProcess, work: Path
) -> None:
    name = next(iter(owner.instances))
    page = work / "index.html"
    page.write_text("<h1>shipped over sftp</h1>\n")
    hook = work / "hello.pb.js"
    hook.write_text('routerAdd("GET", "/hello", (e) => e.string(200, "hi"))\n')
    sftp(
        name,
        owner.key,
        f"put {page} pb_public/index.html\n"
        "mkdir pb_hooks/lib\n"
        f"put {hook} pb_hooks/lib/draft.js\n"
        "rename pb_hooks/lib/draft.js pb_hooks/lib/final.js\n"
        "cd pb_public\n"
        f"get index.html {work / 'back.html'}\n",
    )
    assert (work / "back.html").read_text() == page.read_text()
    root = owner.root(name)
    served = root / "pb_public" / "index.html"
    uid = root.stat().st_uid
    assert served.stat().st_uid == uid and oct(served.stat().st_mode & 0o777) == "0o644"
    assert (root / "pb_hooks" / "lib" / "final.js").is_file()
    assert not (root / "pb_hooks" / "lib" / "draft.js").exists()
    assert (root / "pb_hooks" / "lib").stat().st_uid == uid
    with serve.instance_client(name) as instance:
        answer = instance.get("/")
    assert answer.status_code == 200 and "shipped over sftp" in answer.text

    listed = sftp(name, owner.key, "ls -1 pb_hooks/lib\n").stdout
    assert names(listed) == {"final.js"}
    sftp(name, owner.key, "rm pb_hooks/lib/final.js\nrmdir pb_hooks/lib\n")
    assert not (root / "pb_hooks" / "lib").exists()
    assert not list((root / "pb_public").glob(".pf-upload-*"))


def test_scp_works_too(owner: Owner, sftp: Sftp, work: Path) -> None:
    name = next(iter(owner.instances))
    source = work / "scp.txt"
    source.write_text("over scp\n")
    subprocess.run(
        ["scp", "-P", str(sftp.port), *ssh_options(sftp.port, owner.key, sftp.known_hosts),
         str(source), f"{name}@127.0.0.1:pb_public/scp.txt"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert (owner.root(name) / "pb_public" / "scp.txt").read_text() == "over scp\n"


def test_a_file_over_the_limit_is_refused_and_leaves_nothing(
    owner: Owner, sftp: Sftp, work: Path
) -> None:
    name = next(iter(owner.instances))
    big = work / "big.bin"
    big.write_bytes(os.urandom(MAX_FILE_MB * 1024 * 1024 + 1))
    sftp(name, owner.key, f"put {big} pb_public/big.bin\n", ok=False)
    folder = owner.root(name) / "pb_public"
    assert not (folder / "big.bin").exists()
    assert not list(folder.glob(".pf-upload-*"))


def test_a_connection_lost_mid_upload_aborts_it(owner: Owner, sftp: Sftp, work: Path) -> None:
    name = next(iter(owner.instances))
    slow = work / "slow.bin"
    slow.write_bytes(os.urandom(1024 * 1024))
    folder = owner.root(name) / "pb_public"
    client = subprocess.Popen(
        ["sftp", "-l", "200", "-b", "-", "-P", str(sftp.port),
         *ssh_options(sftp.port, owner.key, sftp.known_hosts), f"{name}@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        assert client.stdin is not None
        client.stdin.write(f"put {slow} pb_public/slow.bin\n")
        client.stdin.flush()
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in folder.glob(".pf-upload-*")):
            assert time.monotonic() < deadline, "the upload never started"
            assert client.poll() is None, "the upload ended before it could be cut"
            time.sleep(0.05)
    finally:
        os.killpg(client.pid, signal.SIGKILL)  # sftp and its ssh: the connection is gone
        client.wait()
    deadline = time.monotonic() + 30
    while list(folder.glob(".pf-upload-*")):
        assert time.monotonic() < deadline, "the temporary file of the cut upload stayed"
        time.sleep(0.05)
    assert not (folder / "slow.bin").exists()


# ----- outside the code folders


@pytest.mark.parametrize(
    "command",
    [
        "get ../pb_data/data.db",
        "get pb_public/../pb_data/data.db",
        "get /pb_data/data.db",
        "get pb_data/data.db",
        "get /etc/passwd",
        "get output.log",
        "ls pb_data",
        "ls /etc",
        "put {file} pb_data/planted.txt",
        "put {file} /planted.txt",
        "put {file} ../planted.txt",
        "put {file} pb_public/../../planted.txt",
        "mkdir pb_data/planted",
        "mkdir planted",
        "rename pb_public/index.html pb_data/index.html",
        "rm pb_data/data.db",
        "rmdir pb_public",
        "ln -s /etc/passwd pb_public/passwd",
        "ln pb_public/index.html pb_public/hardlink.html",
    ],
)
def test_refused_outside_the_code_folders(
    owner: Owner, sftp: Sftp, work: Path, command: str
) -> None:
    name = next(iter(owner.instances))
    file = work / "planted.txt"
    file.write_text("planted\n")
    root = owner.root(name)
    before = sorted(p.name for p in root.iterdir())
    data_before = sorted(p.name for p in (root / "pb_data").iterdir())
    sftp(name, owner.key, command.format(file=file) + "\n", ok=False)
    assert sorted(p.name for p in root.iterdir()) == before
    assert sorted(p.name for p in (root / "pb_data").iterdir()) == data_before
    assert not (root.parent / "planted.txt").exists()
    assert not (root / "pb_public" / "passwd").exists()
    assert not (root / "pb_public" / "hardlink.html").exists()


def test_a_symlink_planted_in_a_code_folder_is_not_followed(
    owner: Owner, sftp: Sftp, work: Path
) -> None:
    name = next(iter(owner.instances))
    public = owner.root(name) / "pb_public"
    (public / "leak.db").symlink_to("../pb_data/data.db")
    (public / "up").symlink_to("..")
    try:
        listed = sftp(name, owner.key, "ls -1a pb_public\n").stdout
        assert "leak.db" not in listed and "up" not in names(listed)
        for command in (
            f"get pb_public/leak.db {work / 'leak.db'}",
            f"get pb_public/up/pb_data/data.db {work / 'leak2.db'}",
            "ls pb_public/up",
            f"put {work / 'index.html'} pb_public/leak.db",
            f"put {work / 'index.html'} pb_public/up/pb_data/planted",
        ):
            sftp(name, owner.key, command + "\n", ok=False)
        assert not (work / "leak.db").exists() and not (work / "leak2.db").exists()
        assert (public / "leak.db").is_symlink()  # not replaced through, not followed
        assert not (owner.root(name) / "pb_data" / "planted").exists()
    finally:
        (public / "leak.db").unlink()
        (public / "up").unlink()


# ----- who may log in


def test_an_unknown_key_is_refused(owner: Owner, sftp: Sftp, work: Path) -> None:
    name = next(iter(owner.instances))
    stranger = keygen(work)
    result = sftp(name, stranger, "ls\n", ok=False)
    assert "Permission denied" in result.stderr


def test_an_unknown_instance_is_refused(owner: Owner, sftp: Sftp) -> None:
    sftp("nosuchinstance", owner.key, "ls\n", ok=False)


def test_a_key_limited_to_another_instance_is_refused(owner: Owner, sftp: Sftp, work: Path) -> None:
    first, second = list(owner.instances)
    limited = keygen(work)
    row = owner.add_key(limited, instances=[second])
    assert row["instances"] == [second]
    assert "Permission denied" in sftp(first, limited, "ls\n", ok=False).stderr
    sftp(second, limited, "ls\n")


def test_another_accounts_key_is_refused(
    owner: Owner, sftp: Sftp, serve: ServeProcess, work: Path
) -> None:
    other = Owner(serve, work)
    other.add_key(other.key)
    try:
        for name in owner.instances:
            assert "Permission denied" in sftp(name, other.key, "ls\n", ok=False).stderr
    finally:
        other.api.close()


def test_a_suspended_owner_is_refused(serve: ServeProcess, sftp: Sftp, work: Path) -> None:
    person = Owner(serve, work)
    name = person.create(unique("sftps"))
    person.add_key(person.key)
    sftp(name, person.key, "ls\n")
    operator = serve.client()
    email = unique("sftpop") + "@example.com"
    operator.headers["Authorization"] = f"Bearer {sign_up(operator, email)}"
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", email],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    account_id = person.api.get("/api/accounts/me").json()["id"]
    try:
        assert operator.post(f"/api/accounts/{account_id}/suspend").status_code == 200
        assert "Permission denied" in sftp(name, person.key, "ls\n", ok=False).stderr
    finally:
        operator.post(f"/api/accounts/{account_id}/resume")
        operator.close()
        person.api.close()


def test_a_removed_key_ends_its_open_session(owner: Owner, sftp: Sftp, work: Path) -> None:
    name = next(iter(owner.instances))
    key = keygen(work)
    row = owner.add_key(key)
    client = subprocess.Popen(
        ["sftp", "-b", "-", "-P", str(sftp.port), *ssh_options(sftp.port, key, sftp.known_hosts),
         f"{name}@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("ls -1 /\n")
        client.stdin.flush()
        assert "pb_public" in "".join(client.stdout.readline() for _ in range(4))
        listed = owner.api.get("/api/ssh-keys").json()
        assert next(k for k in listed if k["id"] == row["id"])["last_used"] is not None
        assert owner.api.delete(f"/api/ssh-keys/{row['id']}").status_code == 204
        client.stdin.write("ls -1 /\n")  # fails: the server closed the connection
        client.stdin.close()
        assert client.wait(timeout=30) != 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert "Permission denied" in sftp(name, key, "ls\n", ok=False).stderr


# ----- nothing but SFTP


def test_shell_exec_and_forwarding_are_refused(owner: Owner, sftp: Sftp) -> None:
    name = next(iter(owner.instances))
    base = ["ssh", "-p", str(sftp.port), *ssh_options(sftp.port, owner.key, sftp.known_hosts)]
    target = f"{name}@127.0.0.1"
    for extra in (
        [target, "true"],  # exec
        [target, "scp", "-t", "pb_public"],  # legacy scp is an exec too
        ["-tt", target],  # a shell with a pty
        ["-T", target],  # a shell without
        ["-W", "127.0.0.1:22", target],  # direct-tcpip
        ["-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{free_port()}:127.0.0.1:1", target],
        ["-s", target, "netconf"],  # another subsystem
    ):
        result = subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert result.returncode != 0, (extra, result.stdout, result.stderr)


def test_password_and_keyboard_interactive_are_not_offered(owner: Owner, sftp: Sftp) -> None:
    name = next(iter(owner.instances))
    result = subprocess.run(
        ["ssh", "-v", "-p", str(sftp.port), "-F", "/dev/null",
         "-o", f"UserKnownHostsFile={sftp.known_hosts}", "-o", "BatchMode=yes",
         "-o", "PubkeyAuthentication=no", f"{name}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    offered = [line for line in result.stderr.splitlines() if "can continue:" in line]
    assert offered and all(line.rstrip().endswith("can continue: publickey") for line in offered)


def test_the_host_key_is_kept_0600_in_the_data_dir(serve: ServeProcess, owner: Owner) -> None:
    path = serve.data_dir / "ssh_host_ed25519_key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[1]  # fmt: skip
    assert owner.api.get("/api/ssh-keys/host").json()["fingerprint"] == printed


def test_sftp_off_listens_nowhere() -> None:
    with running_server(env={"PF_SFTP": "off"}) as server, server.client() as api:
        api.headers["Authorization"] = f"Bearer {sign_up(api, unique('off') + '@example.com')}"
        host = api.get("/api/ssh-keys/host").json()
        assert host["address"] is None and host["port"] is None
        assert server.process is not None
        listening = {
            conn.laddr.port
            for conn in psutil.Process(server.process.pid).net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN
        }
        assert listening == {server.port}


# ----- the CLI


def test_keys_add_ls_rm_on_the_cli(serve: ServeProcess, owner: Owner, work: Path) -> None:
    token = owner.api.headers["Authorization"].removeprefix("Bearer ")
    env = {**serve.env(), "PF_URL": serve.url, "PF_TOKEN": token, "COLUMNS": "250"}
    env["XDG_CONFIG_HOME"] = str(work / "cli-config")

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "pocketfleet"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result

    key = keygen(work)
    second = list(owner.instances)[1]
    added = cli("keys", "add", str(key.with_suffix(".pub")), "--name", "cli key",
                "--instances", second).stdout  # fmt: skip
    assert "cli key" in added and f"opens {second}" in added
    host = owner.api.get("/api/ssh-keys/host").json()
    listed = cli("keys", "ls").stdout
    assert host["fingerprint"] in listed and "cli key" in listed and second in listed
    key_id = next(k["id"] for k in owner.api.get("/api/ssh-keys").json() if k["name"] == "cli key")
    assert "removed" in cli("keys", "rm", key_id).stdout
    assert "cli key" not in cli("keys", "ls").stdout
    refused = cli("keys", "add", str(key), ok=False)  # the private key
    assert "422" in refused.stderr and "private key" in refused.stderr
    assert "404" in cli("keys", "rm", key_id, ok=False).stderr


# ----- what OpenSSH's sftp does not send, through asyncssh's own client


async def test_partial_writes_append_and_what_is_refused(
    owner: Owner, sftp: Sftp, work: Path
) -> None:
    name = next(iter(owner.instances))
    key = asyncssh.read_private_key(str(owner.key))
    async with (
        asyncssh.connect(
            "127.0.0.1", sftp.port, username=name, client_keys=[key], known_hosts=None,
            agent_path=None, config=[],
        ) as conn,
        conn.start_sftp_client() as client,
    ):  # fmt: skip
        path = "/pb_public/partial.txt"
        async with client.open(path, "wb") as file:
            await file.write(b"hello world")
        async with client.open(path, "ab") as file:  # append
            await file.write(b"!")
        # a write without truncate keeps the rest of the file
        async with client.open(path, pflags_or_mode=asyncssh.FXF_WRITE, encoding=None) as file:
            await file.write(b"HELLO", 0)
        async with client.open(path, "rb") as file:
            assert await file.read() == b"HELLO world!"
        assert (owner.root(name) / "pb_public" / "partial.txt").read_bytes() == b"HELLO world!"

        with pytest.raises(asyncssh.SFTPFailure):  # v3 clients see "file exists" as failure
            await client.open(path, pflags_or_mode=asyncssh.FXF_WRITE | asyncssh.FXF_EXCL)
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await client.open("/pb_public/none.txt", pflags_or_mode=asyncssh.FXF_WRITE)
        with pytest.raises(asyncssh.SFTPOpUnsupported):
            await client.open(path, "r+b")  # reading and writing one handle
        with pytest.raises(asyncssh.SFTPOpUnsupported):
            await client.truncate(path, 3)
        with pytest.raises(asyncssh.SFTPOpUnsupported):
            await client.statvfs("/")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await client.readlink(path)
        await client.chmod(path, 0o777)  # accepted, ignored: files are 0644
        assert (await client.stat(path)).permissions == stat.S_IFREG | 0o644
        assert (
            oct((owner.root(name) / "pb_public" / "partial.txt").stat().st_mode & 0o777) == "0o644"
        )
        assert await client.realpath("/pb_public/../..") == "/"
        assert sorted(await client.listdir("/")) == ["pb_hooks", "pb_migrations", "pb_public"]
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await client.listdir("/pb_public/..")
        await client.remove(path)


def test_changes_are_refused_while_a_deploy_holds_the_instance(
    owner: Owner, sftp: Sftp, work: Path
) -> None:
    """A deploy holds the instance while it waits for it to stop (its engine frozen here):
    SFTP reads still work, changes are refused as busy; once the deploy is done they work."""
    name = owner.create(unique("sftpbusy"))
    folder = str(owner.root(name))
    engine = next(
        p.pid
        for p in psutil.process_iter(["cmdline", "name"])
        if p.info["name"] != "bwrap" and any(folder in a for a in p.info["cmdline"] or [])
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("pb_public/index.html")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
    page = work / "busy.html"
    page.write_text("over sftp")
    token = owner.api.headers["Authorization"]
    result: list[int] = []

    def deploy() -> None:
        with owner.serve.client() as api:
            api.headers["Authorization"] = token
            sent = api.post(
                f"/api/instances/{name}/deploys",
                content=archive.getvalue(),
                headers={"Content-Type": "application/gzip"},
            )
            result.append(sent.status_code)

    os.kill(engine, signal.SIGSTOP)
    deployer = threading.Thread(target=deploy)
    try:
        deployer.start()
        deadline = time.monotonic() + 8  # within the 10 s the driver waits for a stop
        while True:
            refused = sftp(name, owner.key, f"put {page} pb_public/busy.html\n", ok=None)
            if refused.returncode != 0:
                break
            assert time.monotonic() < deadline, "the deploy never held the instance"
            time.sleep(0.1)
        assert "busy" in refused.stderr + refused.stdout, refused.stderr
        sftp(name, owner.key, "ls pb_public\n")  # reading goes on
    finally:
        os.kill(engine, signal.SIGCONT)
        deployer.join(60)
    assert result == [201]
    sftp(name, owner.key, f"put {page} pb_public/busy.html\n")
    assert (owner.root(name) / "pb_public" / "index.html").read_text() == "new"
