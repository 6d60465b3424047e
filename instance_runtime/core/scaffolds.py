"""What the collection editor starts from: the default collection of each type, and the list
of OAuth2 providers an auth collection may use (PocketBase's `/api/collections/meta/*`).

Contract:

- `scaffolds()` is `{"base": ..., "auth": ..., "view": ...}`, each the JSON of a new unsaved
  collection of that type (`core.collections.new_collection`) with `id` and `name` empty: its
  system fields, options and rules as a create would start from. An auth scaffold's two
  unique indexes are named after one random 10-character id (lowercase letters and digits) —
  the one a fresh collection would be given — on the table `` (the name is still empty);
  token secrets are never part of it (`Collection.to_json`).
- `oauth2_providers()` is every provider of `tools.oauth2` in PocketBase's order (`order`,
  then name), each as `{"name", "displayName", "logo"}` (the SVG markup) and nothing else.
"""

from __future__ import annotations

from typing import Any

from instance_runtime.core.collections import new_collection
from instance_runtime.tools.oauth2.providers import PROVIDERS
from instance_runtime.tools.security import ID_ALPHABET, random_string

SCAFFOLD_TYPES = ("base", "auth", "view")


def scaffolds() -> dict[str, dict[str, Any]]:
    """See the module docstring."""
    index_id = random_string(10, ID_ALPHABET)  # as PocketBase: one id for all three
    out: dict[str, dict[str, Any]] = {}
    for ctype in SCAFFOLD_TYPES:
        coll = new_collection(ctype, "", index_id)
        coll.id = ""
        out[ctype] = coll.to_json()
    return out


def oauth2_providers() -> list[dict[str, str]]:
    """See the module docstring."""
    return [
        {"name": spec.name, "displayName": spec.display_name, "logo": spec.logo}
        for spec in PROVIDERS.values()
    ]
