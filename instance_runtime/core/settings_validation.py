"""Validation of settings before they are saved, as PocketBase's `Settings.PostValidate`.

Contract: `validate(values)` returns the `ValidationErrors` of a whole settings dict (empty when
it is valid), nested by member as PocketBase answers them (`{"meta": {"appName": ...}}`, list
items by index: `{"rateLimits": {"rules": {"1": {"label": ...}}}}`). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from instance_runtime.core.errors import FieldError, ValidationErrors, required
from instance_runtime.tools.cron import CronError, Schedule

_HOST = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.?$"
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HEX_COLOR = re.compile(r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RULE_LABEL = re.compile(r"^(\w+ /[\w/-]*|/[\w/-]*|\w+:\w+|\*:\w+|\w+)$")
_AUDIENCES = ("", "@guest", "@auth")
_SMTP_AUTH = ("", "PLAIN", "LOGIN")


def _length(value: str, low: int, high: int) -> FieldError | None:
    if value and not low <= len(value) <= high:
        if low == high:
            return FieldError(
                "validation_length_invalid",
                "The length must be exactly {{.min}}.",
                {"min": low, "max": high},
            )
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"min": low, "max": high},
        )
    return None


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc)


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOST.match(value))


def _ip_or_subnet(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return False


def _min(value: int, threshold: int) -> FieldError | None:
    if value and value < threshold:
        return FieldError(
            "validation_min_greater_equal_than_required",
            "Must be no less than {{.threshold}}.",
            {"threshold": threshold},
        )
    return None


def _put(errors: ValidationErrors, key: str, error: FieldError | ValidationErrors | None) -> None:
    if error:
        errors[key] = error


def _meta(meta: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    color = str(meta.get("accentColor", ""))
    color_error = _length(color, 7, 7)
    if color_error is None and color and not _HEX_COLOR.match(color):
        color_error = FieldError("validation_is_hex_color", "Must be a valid hex color code.")
    _put(errors, "accentColor", color_error)
    for key in ("appName", "senderName"):
        value = str(meta.get(key, ""))
        _put(errors, key, required() if not value else _length(value, 1, 255))
    url = str(meta.get("appURL", ""))
    if not url:
        errors["appURL"] = required()
    elif not _is_url(url):
        errors["appURL"] = FieldError("validation_is_url", "Must be a valid URL.")
    sender = str(meta.get("senderAddress", ""))
    if not sender:
        errors["senderAddress"] = required()
    elif not _EMAIL.match(sender):
        errors["senderAddress"] = FieldError(
            "validation_is_email", "Must be a valid email address."
        )
    return errors


def _smtp(smtp: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    enabled = bool(smtp.get("enabled"))
    host = str(smtp.get("host", ""))
    if enabled and not host:
        errors["host"] = required()
    elif host and not _is_host(host):
        errors["host"] = FieldError("validation_is_host", "Must be a valid IP address or DNS name.")
    port = int(smtp.get("port") or 0)
    if enabled and not port:
        errors["port"] = required()
    else:
        _put(errors, "port", _min(port, 0))
    if str(smtp.get("authMethod", "")) not in _SMTP_AUTH:
        errors["authMethod"] = FieldError("validation_in_invalid", "Must be a valid value.")
    local = str(smtp.get("localName", ""))
    if local and not _is_host(local):
        errors["localName"] = FieldError(
            "validation_is_host", "Must be a valid IP address or DNS name."
        )
    return errors


def _s3(s3: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    enabled = bool(s3.get("enabled"))
    endpoint = str(s3.get("endpoint", ""))
    if endpoint and not _is_url(endpoint):
        errors["endpoint"] = FieldError("validation_is_url", "Must be a valid URL.")
    for key in ("endpoint", "bucket", "region", "accessKey", "secret"):
        if enabled and not str(s3.get(key, "")) and key not in errors:
            errors[key] = required()
    return errors


def _cron(expr: str) -> FieldError | None:
    """PocketBase's `checkCronExpression`: the parser's own message (`tools.cron`)."""
    try:
        Schedule.parse(expr)
    except CronError as exc:
        text = str(exc)
        return FieldError("validation_invalid_cron", text[:1].upper() + text[1:])
    return None


def _backups(backups: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    _put(errors, "s3", _s3(backups.get("s3") or {}))
    cron = str(backups.get("cron", ""))
    if cron:
        _put(errors, "cron", _cron(cron))
    keep = int(backups.get("cronMaxKeep") or 0)
    if cron and not keep:
        errors["cronMaxKeep"] = required()
    else:
        _put(errors, "cronMaxKeep", _min(keep, 1))
    return errors


def _batch(batch: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    enabled = bool(batch.get("enabled"))
    for key in ("maxRequests", "timeout"):
        value = int(batch.get(key) or 0)
        if enabled and not value:
            errors[key] = required()
        else:
            _put(errors, key, _min(value, 0))
    _put(errors, "maxBodySize", _min(int(batch.get("maxBodySize") or 0), 0))
    return errors


def _rule(rule: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    label = str(rule.get("label", ""))
    if not label:
        errors["label"] = required()
    elif not _RULE_LABEL.match(label):
        errors["label"] = FieldError("validation_match_invalid", "Must be in a valid format.")
    for key in ("maxRequests", "duration"):
        value = int(rule.get(key) or 0)
        _put(errors, key, required() if not value else _min(value, 1))
    if str(rule.get("audience", "")) not in _AUDIENCES:
        errors["audience"] = FieldError("validation_in_invalid", "Must be a valid value.")
    return errors


def _rate_limits(limits: dict[str, Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    rules = list(limits.get("rules") or [])
    if limits.get("enabled") and not rules:
        errors["rules"] = required()
    rule_errors: ValidationErrors = {}
    seen: list[str] = []
    for index, rule in enumerate(rules):
        key = f"{rule.get('label', '')}@@{rule.get('audience', '')}"
        if any(k.startswith(key) or key.startswith(k) for k in seen):
            rule_errors[str(index)] = {
                "label": FieldError(
                    "validation_conflicting_rate_limit_rule",
                    "Rate limit rule configuration with label {{.label}} already exists or "
                    "conflicts with another rule.",
                    {"label": rule.get("label", "")},
                )
            }
            break
        seen.append(key)
    if not rule_errors:
        for index, rule in enumerate(rules):
            _put(rule_errors, str(index), _rule(rule))
    _put(errors, "rules", rule_errors)
    _put(errors, "excludedIPs", _ips(limits.get("excludedIPs") or []))
    return errors


def _ips(items: list[Any]) -> ValidationErrors:
    errors: ValidationErrors = {}
    for index, item in enumerate(items):
        text = str(item)
        if not text:
            errors[str(index)] = required()
        elif not _ip_or_subnet(text):
            # PocketBase's code, misspelt as it is
            errors[str(index)] = FieldError(
                "validation_invlaid_ip_or_subnet", "Invalid IP or CIDR subnet."
            )
    return errors


def validate(values: dict[str, Any]) -> ValidationErrors:
    """See the module docstring."""
    errors: ValidationErrors = {}
    _put(errors, "superuserIPs", _ips(values.get("superuserIPs") or []))
    _put(errors, "meta", _meta(values.get("meta") or {}))
    max_days = _min(int((values.get("logs") or {}).get("maxDays") or 0), 0)
    _put(errors, "logs", {"maxDays": max_days} if max_days else None)
    _put(errors, "smtp", _smtp(values.get("smtp") or {}))
    _put(errors, "s3", _s3(values.get("s3") or {}))
    _put(errors, "backups", _backups(values.get("backups") or {}))
    _put(errors, "batch", _batch(values.get("batch") or {}))
    _put(errors, "rateLimits", _rate_limits(values.get("rateLimits") or {}))
    return errors
