"""What an API rule or filter may know about the request: PocketBase's `RequestInfo`.

Contract: built once per request by the HTTP layer (or per batch sub-request); read-only after.

- `auth` is the authenticated record's data as stored (every field, hidden ones included, with
  `collectionId` / `collectionName`), or None for a guest; `auth_collection` its collection.
- `query` and `headers` are flat `str -> str` maps; header names are lower-cased with `-`
  replaced by `_` (as `@request.headers.x_token` expects).
- `body` is the submitted data (JSON object or form fields) with modifiers (`field+`) as sent.
- `method` is upper-case; `context` is one of `default`, `expand`, `batch`, `realtime`,
  `protectedFile`, `oauth2`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from instance_runtime.core.models import Collection

SUPERUSERS = "_superusers"


@dataclass
class RequestInfo:
    method: str = "GET"
    context: str = "default"
    query: dict[str, str] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    auth: dict[str, Any] | None = None
    auth_collection: Collection | None = None

    @property
    def is_superuser(self) -> bool:
        return self.auth_collection is not None and self.auth_collection.name == SUPERUSERS

    @property
    def auth_id(self) -> str:
        return str(self.auth.get("id", "")) if self.auth else ""

    def with_context(self, context: str) -> RequestInfo:
        return dataclasses.replace(self, context=context)
