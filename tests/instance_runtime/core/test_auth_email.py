"""instance_runtime/core/auth_email.py without HTTP: a real `App` on a scratch folder sending to
the real SMTP server of tests/support/smtp.py; tokens are read from the messages it receives.
(The HTTP side, against PocketBase, is tests/conformance/test_conformance_auth_email.py.)"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.core import auth, auth_email, record_write
from instance_runtime.core import settings as settings_store
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record, find
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer, pocketbase_token

PASSWORD = "secret-pass-123"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


async def _configure(app: App, **smtp: Any) -> None:
    patch = {
        "meta": {"appName": "Acme", "appURL": "http://acme.test", "senderAddress": "no@acme.test"},
        "smtp": smtp,
    }
    await app.save_settings(settings_store.patched(app.settings.current, patch))


@pytest.fixture
async def app(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[App]:
    runtime = App(tmp_path / "pb_data")
    await _configure(runtime, enabled=True, host=smtp.host, port=smtp.port, tls=False)
    try:
        yield runtime
    finally:
        runtime.close()


def users(app: App) -> Collection:
    found = app.schema.find("users")
    assert found is not None
    return found


async def add_user(app: App, email: str, **values: Any) -> Record:
    record = {"email": email, "password": security.hash_password(PASSWORD, 4), **values}

    def write(conn: sqlite3.Connection, schema: Schema) -> Record:
        return record_write.save(conn, schema, users(app), record, hooks=app.hooks)

    return await app.write(write)


async def stored(app: App, record: Record) -> Record:
    found = await app.read(lambda conn, schema: find(conn, users(app), str(record["id"])))
    assert found is not None
    return found


async def refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


async def test_verification_mail_carries_a_token_that_verifies(app: App, smtp: SmtpServer) -> None:
    ann = await add_user(app, "ann@example.com")
    await auth_email.request_verification(app, users(app), "ann@example.com")
    mail = smtp.wait_for(to="ann@example.com", subject_contains="Verify")
    assert mail.subject == "Verify your Acme email"
    token = pocketbase_token(mail, "confirm-verification")
    claims = auth_email.unverified_claims(token)
    assert {k: claims[k] for k in ("type", "id", "email")} == {
        "type": "verification",
        "id": ann["id"],
        "email": "ann@example.com",
    }
    await auth_email.confirm_verification(app, users(app), token)
    after = await stored(app, ann)
    assert after["verified"] is True
    assert after["tokenKey"] == ann["tokenKey"]  # verifying revokes nothing
    # confirming again is fine, and a verified record gets no more mail
    await auth_email.confirm_verification(app, users(app), token)
    await auth_email.request_verification(app, users(app), "ann@example.com")
    assert app.mailer.flush(5)
    assert len(smtp.messages) == 1


async def test_unknown_addresses_and_resends_send_nothing(app: App, smtp: SmtpServer) -> None:
    await add_user(app, "bob@example.com")
    await auth_email.request_verification(app, users(app), "nobody@example.com")
    await auth_email.request_password_reset(app, users(app), "BOB@example.com")  # exact match
    await auth_email.request_verification(app, users(app), "bob@example.com")
    await auth_email.request_verification(app, users(app), "bob@example.com")
    await auth_email.request_password_reset(app, users(app), "bob@example.com")
    await auth_email.request_password_reset(app, users(app), "bob@example.com")
    assert app.mailer.flush(5)
    assert sorted(m.subject for m in smtp.messages) == [
        "Reset your Acme password",
        "Verify your Acme email",
    ]


async def test_a_reset_rotates_the_token_key_and_verifies(app: App, smtp: SmtpServer) -> None:
    dan = await add_user(app, "dan@example.com")
    coll = users(app)
    login = auth.new_auth_token(coll, dan)
    await auth_email.request_password_reset(app, coll, "dan@example.com")
    token = pocketbase_token(smtp.wait_for(to="dan@example.com"), "confirm-password-reset")

    mismatch = await refused(
        auth_email.confirm_password_reset(app, coll, token, "new-pass-456", "other-pass-456")
    )
    assert mismatch.status == 400
    assert mismatch.data == {
        "passwordConfirm": {"code": "validation_values_mismatch", "message": "Values don't match."}
    }
    await auth_email.confirm_password_reset(app, coll, token, "new-pass-456", "new-pass-456")
    after = await stored(app, dan)
    assert after["tokenKey"] != dan["tokenKey"]
    assert after["verified"] is True
    assert security.check_password("new-pass-456", after["password"])
    assert await app.read(lambda conn, schema: auth.verify_token(conn, schema, login)) is None

    reused = await refused(
        auth_email.confirm_password_reset(app, coll, token, "new-pass-789", "new-pass-789")
    )
    assert reused.data["token"]["code"] == "validation_invalid_token"
    # the confirmation released the resend throttle
    await auth_email.request_password_reset(app, coll, "dan@example.com")
    assert smtp.wait_for(to="dan@example.com").subject == "Reset your Acme password"


async def test_a_reset_mail_that_was_not_sent_does_not_hold_back_the_next(
    app: App, smtp: SmtpServer
) -> None:
    erin = await add_user(app, "erin@example.com")
    coll = users(app)
    await _configure(app, enabled=False)
    await auth_email.request_password_reset(app, coll, "erin@example.com")
    await auth_email.request_verification(app, coll, "erin@example.com")
    assert app.mailer.flush(5)
    throttle = auth_email.throttle_of(app)
    assert not throttle.active(auth_email.password_reset_key(coll, erin))
    assert throttle.active(auth_email.verification_key(coll, erin))
    assert smtp.messages == []


async def test_an_email_change_goes_to_the_new_address(app: App, smtp: SmtpServer) -> None:
    fay = await add_user(app, "fay@example.com")
    await add_user(app, "gus@example.com")
    coll = users(app)
    taken = await refused(auth_email.request_email_change(app, coll, fay, "gus@example.com"))
    assert taken.data["newEmail"] == {
        "code": "validation_invalid_new_email",
        "message": "Invalid new email address.",
    }
    same = await refused(auth_email.request_email_change(app, coll, fay, "fay@example.com"))
    assert same.data["newEmail"]["code"] == "validation_not_in_invalid"

    await auth_email.request_email_change(app, coll, fay, "fay.new@example.com")
    mail = smtp.wait_for(to="fay.new@example.com")
    token = pocketbase_token(mail, "confirm-email-change")
    assert auth_email.unverified_claims(token)["newEmail"] == "fay.new@example.com"
    wrong = await refused(auth_email.confirm_email_change(app, coll, token, "wrong-pass"))
    assert wrong.data == {
        "password": {
            "code": "validation_invalid_password",
            "message": "Missing or invalid auth record password.",
        }
    }
    await auth_email.confirm_email_change(app, coll, token, PASSWORD)
    after = await stored(app, fay)
    assert (after["email"], after["verified"]) == ("fay.new@example.com", True)
    assert after["tokenKey"] != fay["tokenKey"]
    used = await refused(auth_email.confirm_email_change(app, coll, token, PASSWORD))
    assert used.data["token"]["code"] == "validation_invalid_token"


async def test_tokens_of_another_kind_or_collection_are_refused(app: App, smtp: SmtpServer) -> None:
    hal = await add_user(app, "hal@example.com")
    coll = users(app)
    superusers = app.schema.find("_superusers")
    assert superusers is not None
    reset = auth.new_token(coll, hal, "passwordReset", {"email": "hal@example.com"})
    wrong_kind = await refused(auth_email.confirm_verification(app, coll, reset))
    assert wrong_kind.data["token"]["code"] == "validation_invalid_token"
    other = dataclasses.replace(coll, id="pbc_other", name="others")
    wrong_collection = await refused(
        auth_email.confirm_password_reset(app, other, reset, "new-pass-456", "new-pass-456")
    )
    assert wrong_collection.data["token"]["code"] == "validation_token_collection_mismatch"
    verified = await refused(auth_email.request_verification(app, superusers, "x@example.com"))
    assert verified.message == "All superusers are verified by default."
    direct = await refused(auth_email.confirm_email_change(app, superusers, reset, PASSWORD))
    assert direct.message == "All superusers can change their emails directly."


def test_form_emails_are_checked_as_pocketbase() -> None:
    assert auth_email.email_error("") is not None
    assert auth_email.email_error("ann@example.com") is None
    too_long = auth_email.email_error("a" * 250 + "@example.com")
    assert too_long is not None
    assert too_long.to_json() == {
        "code": "validation_length_out_of_range",
        "message": "The length must be between 1 and 255.",
        "params": {"min": 1, "max": 255},
    }
    not_one = auth_email.email_error("ann-at-example")
    assert not_one is not None and not_one.code == "validation_is_email"


def test_claims_are_read_without_the_signature() -> None:
    token = security.new_jwt({"id": "a", "email": "a@example.com"}, "k" * 32, 60)
    head, body, _ = token.split(".")
    assert auth_email.unverified_claims(f"{head}.{body}.!!!")["email"] == "a@example.com"
    assert auth_email.unverified_claims("not-a-token") == {}
    assert auth_email.unverified_claims(f"{body}.{body}.x") == {}  # no alg in the header


async def test_emails_are_found_case_insensitively_only_with_a_nocase_index(app: App) -> None:
    await add_user(app, "Kim@Example.com")
    exact = users(app)
    nocase = dataclasses.replace(
        exact, indexes=["CREATE UNIQUE INDEX `idx_e` ON `users` (`email` COLLATE NOCASE)"]
    )
    missing = await app.read(lambda c, s: auth.find_by_email(c, exact, "kim@example.com"))
    assert missing is None
    found = await app.read(lambda c, s: auth.find_by_email(c, nocase, "kim@example.com"))
    assert found is not None and found["email"] == "Kim@Example.com"


def test_the_resend_throttle_expires() -> None:
    now = [100.0]
    throttle = auth_email.ResendThrottle(clock=lambda: now[0])
    throttle.hold("k")
    assert throttle.active("k")
    now[0] += auth_email.RESEND_COOLDOWN - 1
    assert throttle.active("k")
    now[0] += 1
    assert not throttle.active("k")
    throttle.hold("k")
    throttle.release("k")
    assert not throttle.active("k")


async def test_the_test_email_is_sent_or_its_error_answered(app: App, smtp: SmtpServer) -> None:
    await auth_email.send_test_email(app, "otp", "test@example.com", "users")
    mail = smtp.wait_for(to="test@example.com")  # sent before the call returned
    assert mail.subject == "OTP for Acme"
    assert "123456" in mail.html
    invalid = await refused(auth_email.send_test_email(app, "nope", "nope", "_mfas"))
    assert invalid.message == "Failed to send the test email."
    assert sorted(invalid.data) == ["collection", "email", "template"]
    await _configure(app, enabled=True, host="127.0.0.1", port=free_port(), tls=False)
    failed = await refused(auth_email.send_test_email(app, "verification", "test@example.com"))
    assert failed.status == 400
    assert failed.message.startswith("Failed to send the test email. Raw error: \n")
    assert len(failed.message) > len("Failed to send the test email. Raw error: \n.")
