"""The keys that seal secrets at rest (`control_plane.sealing`), on real files."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from control_plane.sealing import (
    Keyring,
    KeyringError,
    SealedValueError,
    create_key_file,
    key_id,
    load_keyring,
)
from control_plane.settings import Settings


@pytest.fixture
def no_umask() -> Iterator[None]:
    """The most permissive umask: a file is private only if it was created so."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_creates_a_private_key_file_and_later_starts_reuse_it(
    tmp_path: Path, no_umask: None
) -> None:
    settings = Settings(data_dir=tmp_path / "pf")
    first = load_keyring(settings)
    path = tmp_path / "pf" / "secret.key"
    assert mode_of(path) == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left
    sealed = first.seal("the secret")
    assert "the secret" not in sealed
    assert load_keyring(settings).open(sealed) == "the secret"


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    barrier = threading.Barrier(4)
    keys: list[bytes] = []

    def create() -> None:
        barrier.wait()
        keys.append(create_key_file(path))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert path.read_bytes().strip() == keys[0]


def test_a_key_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(Fernet.generate_key())
    path.chmod(0o644)
    load_keyring(Settings(data_dir=tmp_path))
    assert mode_of(path) == 0o600


def test_a_symlinked_or_malformed_key_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    target.write_bytes(Fernet.generate_key())
    (tmp_path / "secret.key").symlink_to(target)
    with pytest.raises(KeyringError, match="symbolic link"):
        load_keyring(Settings(data_dir=tmp_path))
    (tmp_path / "secret.key").unlink()
    (tmp_path / "secret.key").write_text("not a key")
    with pytest.raises(KeyringError, match="not a Fernet key"):
        load_keyring(Settings(data_dir=tmp_path))


def test_pf_secret_key_seals_and_the_key_file_still_opens_older_values(tmp_path: Path) -> None:
    from_file = load_keyring(Settings(data_dir=tmp_path))
    old = from_file.seal("sealed by the file's key")
    key = Fernet.generate_key()
    keyring = load_keyring(Settings(data_dir=tmp_path, secret_key=key.decode()))
    assert keyring.primary_id == key_id(key)
    assert keyring.open(old) == "sealed by the file's key"
    assert not keyring.is_current(old)
    assert keyring.is_current(keyring.seal("new"))
    assert Fernet(key).decrypt(keyring.seal("new").split(":", 2)[2].encode()) == b"new"


def test_pf_secret_key_does_not_create_a_key_file(tmp_path: Path) -> None:
    load_keyring(Settings(data_dir=tmp_path / "pf", secret_key=Fernet.generate_key().decode()))
    assert not (tmp_path / "pf" / "secret.key").exists()


def test_rotation_puts_the_new_key_first(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed = Keyring(old).seal("value")
    rotated = load_keyring(Settings(data_dir=tmp_path, secret_key=f"{new.decode()},{old.decode()}"))
    assert rotated.open(sealed) == "value" and not rotated.is_current(sealed)


def test_a_bad_pf_secret_key_is_refused_with_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match=r"key 1 of PF_SECRET_KEY.*generate_key"):
        load_keyring(Settings(data_dir=tmp_path, secret_key="hunter2"))
    with pytest.raises(KeyringError, match="holds no key"):
        load_keyring(Settings(data_dir=tmp_path, secret_key=" , "))


def test_settings_do_not_show_the_key() -> None:
    assert "secret_key" not in repr(Settings(secret_key=Fernet.generate_key().decode()))


def test_values_of_another_key_or_damaged_ones_are_refused() -> None:
    sealed = Keyring(Fernet.generate_key()).seal("value")
    with pytest.raises(SealedValueError, match="does not have"):
        Keyring(Fernet.generate_key()).open(sealed)
    keyring = Keyring(Fernet.generate_key())
    damaged = keyring.seal("value")[:-4] + "AAAA"
    with pytest.raises(SealedValueError, match="damaged"):
        keyring.open(damaged)
    with pytest.raises(SealedValueError, match="not a sealed value"):
        keyring.open('{"A": "plain"}')
