"""Validation of an auth collection's options, as PocketBase's `collectionAuthOptions.validate`.

Contract: `validate(schema, coll)` returns the `ValidationErrors` of `coll`'s auth options keyed
by option (`{"otp": {"length": ...}}`, providers by index), empty when they are valid. As
PocketBase: the member checks first (`manageRule` null or not empty, templates, token durations
and secrets, OTP and MFA durations, OAuth2 providers when OAuth2 is on); only when those pass,
MFA needs two enabled auth methods and a valid `mfa.rule`, and every password identity field
needs a single-column unique index. Rules themselves (`authRule`, `manageRule`) are checked
with the other API rules by `core.collections`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from instance_runtime.core import rules
from instance_runtime.core.auth import unique_index_collate
from instance_runtime.core.errors import FieldError, ValidationErrors, required
from instance_runtime.core.models import Collection
from instance_runtime.core.schema import Schema
from instance_runtime.tools.oauth2 import provider_names

_TOKENS = ("authToken", "passwordResetToken", "emailChangeToken", "verificationToken", "fileToken")
_TEMPLATES = ("verificationTemplate", "resetPasswordTemplate", "confirmEmailChangeTemplate")
MAX_TOKEN_DURATION = 94670856  # about 3 years


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _put(errors: ValidationErrors, key: str, found: FieldError | ValidationErrors | None) -> None:
    if found:
        errors[key] = found


def _in_range(value: int, low: int, high: int | None) -> FieldError | None:
    """Required, then ozzo's Min/Max."""
    if not value:
        return required()
    if value < low:
        return FieldError(
            "validation_min_greater_equal_than_required",
            "Must be no less than {{.threshold}}.",
            {"threshold": low},
        )
    if high is not None and value > high:
        return FieldError(
            "validation_max_less_equal_than_required",
            "Must be no greater than {{.threshold}}.",
            {"threshold": high},
        )
    return None


def _template(value: Any) -> ValidationErrors:
    template = _dict(value)
    errors: ValidationErrors = {}
    for key in ("subject", "body"):
        if not str(template.get(key) or ""):
            errors[key] = required()
    return errors


def _token(value: Any) -> ValidationErrors:
    option = _dict(value)
    errors: ValidationErrors = {}
    secret = str(option.get("secret") or "")
    if not secret:
        errors["secret"] = required()
    elif not 30 <= len(secret) <= 255:
        errors["secret"] = FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"min": 30, "max": 255},
        )
    _put(errors, "duration", _in_range(int(option.get("duration") or 0), 10, MAX_TOKEN_DURATION))
    return errors


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc)


def _provider(value: Any) -> ValidationErrors:
    provider = _dict(value)
    errors: ValidationErrors = {}
    name = str(provider.get("name") or "")
    if not name:
        errors["name"] = required()
    elif name not in provider_names():
        errors["name"] = FieldError(
            "validation_missing_provider",
            "Invalid or missing provider with name {{.name}}.",
            {"name": name},
        )
    for key in ("clientId", "clientSecret"):
        if not str(provider.get(key) or ""):
            errors[key] = required()
    for key in ("authURL", "tokenURL", "userInfoURL"):
        url = str(provider.get(key) or "")
        if url and not _is_url(url):
            errors[key] = FieldError("validation_is_url", "Must be a valid URL.")
    return errors


def _oauth2(value: Any) -> ValidationErrors:
    option = _dict(value)
    if not option.get("enabled"):
        return {}
    providers = list(option.get("providers") or [])
    seen: set[str] = set()
    for index, provider in enumerate(providers):
        name = str(_dict(provider).get("name") or "")
        if name and name in seen:
            duplicate = FieldError(
                "validation_duplicated_provider",
                "The provider {{.name}} is already registered.",
                {"name": name},
            )
            return {"providers": {str(index): {"name": duplicate}}}
        seen.add(name)
    found: ValidationErrors = {}
    for index, provider in enumerate(providers):
        _put(found, str(index), _provider(provider))
    return {"providers": found} if found else {}


def _otp(value: Any) -> ValidationErrors:
    option = _dict(value)
    errors: ValidationErrors = {}
    if option.get("enabled"):
        _put(errors, "duration", _in_range(int(option.get("duration") or 0), 10, 86400))
        _put(errors, "length", _in_range(int(option.get("length") or 0), 4, None))
    _put(errors, "emailTemplate", _template(option.get("emailTemplate")))
    return errors


def _mfa(value: Any) -> ValidationErrors:
    option = _dict(value)
    if not option.get("enabled"):
        return {}
    found = _in_range(int(option.get("duration") or 0), 10, 86400)
    return {"duration": found} if found else {}


def _members(coll: Collection) -> ValidationErrors:
    options = coll.options
    errors: ValidationErrors = {}
    if options.get("manageRule") == "":
        errors["manageRule"] = FieldError(
            "validation_nil_or_not_empty_required", "Cannot be blank."
        )
    _put(errors, "authAlert", _alert(_dict(options.get("authAlert"))))
    password_auth = _dict(options.get("passwordAuth"))
    if password_auth.get("enabled") and not password_auth.get("identityFields"):
        errors["passwordAuth"] = {"identityFields": required()}
    _put(errors, "oauth2", _oauth2(options.get("oauth2")))
    _put(errors, "otp", _otp(options.get("otp")))
    _put(errors, "mfa", _mfa(options.get("mfa")))
    for key in _TOKENS:
        _put(errors, key, _token(options.get(key)))
    for key in _TEMPLATES:
        template = options.get(key)
        _put(errors, key, _template(template) if _dict(template) else required())
    return errors


def _alert(value: dict[str, Any]) -> ValidationErrors:
    found = _template(value.get("emailTemplate"))
    return {"emailTemplate": found} if found else {}


def validate(schema: Schema, coll: Collection) -> ValidationErrors:
    """See the module docstring."""
    errors = _members(coll)
    if errors:
        return errors
    options = coll.options
    if _dict(options.get("mfa")).get("enabled"):
        enabled = sum(
            bool(_dict(options.get(key)).get("enabled"))
            for key in ("passwordAuth", "oauth2", "otp")
        )
        if enabled < 2:
            problem = FieldError(
                "validation_mfa_not_enough_auths",
                "MFA requires at least 2 auth methods to be enabled.",
            )
            return {"mfa": {"enabled": problem}}
        rule = str(_dict(options.get("mfa")).get("rule") or "")
        if rule:
            raw = rules.rule_problem(schema, coll, rule)
            if raw is not None:
                invalid = FieldError("validation_invalid_rule", "Invalid rule. Raw error: " + raw)
                return {"mfa": {"rule": invalid}}
    password_auth = _dict(options.get("passwordAuth"))
    if password_auth.get("enabled"):
        for name in password_auth.get("identityFields") or []:
            if coll.field(str(name)) is None:
                problem = FieldError(
                    "validation_missing_field",
                    "Invalid or missing field {{.fieldName}}",
                    {"fieldName": name},
                )
            elif unique_index_collate(coll, str(name)) is None:
                problem = FieldError(
                    "validation_missing_unique_constraint",
                    "The field {{.fieldName}} doesn't have a UNIQUE constraint.",
                    {"fieldName": name},
                )
            else:
                continue
            return {"passwordAuth": {"identityFields": problem}}
    return {}
