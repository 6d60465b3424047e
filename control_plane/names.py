"""Instance names: DNS labels that become `NAME.domain`."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$")

RESERVED_NAMES = frozenset(
    {
        "www", "api", "admin", "app", "apps", "dashboard", "mail", "smtp", "imap", "pop",
        "ftp", "ns", "ns1", "ns2", "dns", "mx", "status", "docs", "help", "support", "blog",
        "static", "assets", "cdn", "auth", "login", "signup", "account", "accounts", "billing",
        "console", "control", "root", "system", "operator", "pocketfleet", "pockethost",
        "localhost", "test", "default", "proxy", "caddy", "wake", "tls",
    }
)  # fmt: skip


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an instance name, or None when it can."""
    if not 3 <= len(name) <= 40:
        return "must be 3 to 40 characters long"
    if not NAME_PATTERN.match(name):
        return (
            "may contain only lowercase letters, digits and '-', and must not start or end with '-'"
        )
    if "--" in name[2:4]:
        return "must not contain '--' at positions 3-4 (reserved for punycode)"
    if name in RESERVED_NAMES:
        return "is reserved"
    return None
