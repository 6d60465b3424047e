"""A tenant sets variables that programs other than its own code interpret: `LD_PRELOAD` with a
library of its own (loaded by a root helper, it would be root on the host), the linker's and
C library's paths, the Go runtime's knobs, `PATH`, `HOME`, Python's, pocketfleet's own. The API
refuses each with 422 naming it; and such a variable stored before the rule existed (written
into the control DB directly, as an older pocketfleet left it) still reaches nothing: the
library is never loaded, by a root helper or by the engine, and the instance starts without
the variable."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.security.hostile import Hostile, Tenant, unique
from tests.support.server import ServeProcess

REFUSED = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "GODEBUG",
    "PATH",
    "HOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PF_DATABASE_URL",
    "PF_SECRET_KEY",
]

# A library as a tenant would build it: loaded into any process, it leaves a line in a file
# of the tenant's folder saying who loaded it (a root helper, or the engine).
EVIL_LIBRARY = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void) {
    FILE *out = fopen(MARKER, "a");
    if (out) { fprintf(out, "loaded as uid %d euid %d\n", getuid(), geteuid()); fclose(out); }
}
"""


@pytest.mark.parametrize("variable", REFUSED)
def test_a_name_others_interpret_is_refused_naming_it(hostile: Hostile, variable: str) -> None:
    tenant, name = hostile.tenant, hostile.instance.name
    refused = tenant.put_env(name, {"HARMLESS": "x", variable: "/tmp/evil"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(f"{variable}: "), refused.text
    listed = tenant.api.get(f"/api/instances/{name}/env").json()["vars"]
    assert [var["name"] for var in listed] == []  # nothing stored, not even HARMLESS


def build_library(instance_folder: Path, uid: int) -> tuple[Path, Path]:
    """The tenant's library in its folder (its uid's, as if uploaded), and the marker file its
    constructor writes."""
    marker = instance_folder / "preloaded.log"
    source = instance_folder / "evil.c"
    library = instance_folder / "evil.so"
    source.write_text(EVIL_LIBRARY)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    for path in (source, library):
        shutil.chown(path, uid, uid)
    library.chmod(0o755)
    # it works: a program started with it leaves its line
    subprocess.run(["/bin/true"], env={"LD_PRELOAD": str(library)}, check=True)
    assert marker.read_text().startswith("loaded as uid 0")
    marker.unlink()
    return library, marker


def store_env_directly(serve: ServeProcess, instance_id: str, env: dict[str, str]) -> None:
    """Write the variables into the control DB in clear, as a pocketfleet that predates the
    rules (and sealing) left them. Only while `serve` is stopped."""
    with sqlite3.connect(serve.data_dir / "control.db") as db:
        db.execute("UPDATE instance SET env = ? WHERE id = ?", (json.dumps(env), instance_id))


def root_helpers_of(uid: int) -> list[psutil.Process]:
    """The root processes holding the instance's sandbox (its bwrap), found as the parents of
    its processes."""
    helpers = {}
    for proc in psutil.process_iter(["uids"]):
        if proc.info["uids"] and proc.info["uids"].real == uid:
            parent = proc.parent()
            # a bwrap only: test servers number their uids alike, and another module's orphan
            # of the same uid has init as its parent
            if parent is not None and parent.uids().real == 0 and parent.name() == "bwrap":
                helpers[parent.pid] = parent
    return list(helpers.values())


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the tenant's library")
def test_a_variable_stored_before_the_rules_reaches_no_process(
    attacker_tenant: Tenant, serve: ServeProcess
) -> None:
    legacy = Hostile.create(attacker_tenant, unique("legacy"))
    instance = legacy.instance
    library, marker = build_library(instance.folder, instance.uid)
    stored = {
        "LD_PRELOAD": str(library),
        "LD_LIBRARY_PATH": str(instance.folder),
        "GCONV_PATH": str(instance.folder),
        "KEPT": "still-here",
    }
    serve.stop()  # instances keep running
    store_env_directly(serve, instance.id, stored)
    serve.start()
    attacker_tenant.move(instance.name, "stop")
    attacker_tenant.move(instance.name, "start")  # prlimit, bwrap, setpriv, sh, pocketbase

    assert legacy.getenv("KEPT") == "still-here"  # the stored row was used
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"):
        assert legacy.getenv(name) == "", name
    open_admin = attacker_tenant.api.post(f"/api/instances/{instance.name}/admin-link")
    assert open_admin.status_code == 200, open_admin.text  # a one-off task ran as well
    assert not marker.exists(), marker.read_text()  # never loaded, by anyone
    helpers = root_helpers_of(instance.uid)
    assert helpers
    for helper in helpers:
        assert set(helper.environ()) <= {"PATH", "LANG"}, helper.environ()
    listed = {
        var["name"]: var["refused"]
        for var in legacy.tenant.api.get(f"/api/instances/{instance.name}/env").json()["vars"]
    }
    assert listed["LD_PRELOAD"] == "interpreted by the dynamic linker"
    assert listed["KEPT"] is None
    legacy.assert_alive()
