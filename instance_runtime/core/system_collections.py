"""PocketBase 0.40's system collections and auth-collection defaults, as its API serializes them.

`system_collections.json` was captured from a fresh PocketBase 0.40.6 data folder
(`GET /api/collections`) without `created`/`updated`, which the runtime sets when it bootstraps
a new data folder. `AUTH_DEFAULTS` holds the options of a newly created auth collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

_DATA: dict[str, Any] = orjson.loads((Path(__file__).with_suffix(".json")).read_bytes())

SYSTEM_COLLECTIONS: list[dict[str, Any]] = _DATA["collections"]
AUTH_DEFAULTS: dict[str, Any] = _DATA["authDefaults"]
