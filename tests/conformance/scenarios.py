"""Every conformance scenario (defined in tests/js/conformance/*.mjs), by test module.

``test_conformance_meta.py`` checks that these lists and the scenarios the JS runner knows are
the same, so a scenario cannot be written and never run.
"""

from __future__ import annotations

COLLECTIONS = [
    "collections-list",
    "collections-view",
    "collections-create-every-field-type",
    "collections-create-view",
    "collections-create-refusals",
    "collections-update-schema",
    "collections-delete",
    "collections-truncate",
    "collections-import",
    "collections-indexes",
    "collections-system-protected",
]

RECORDS = [
    "records-list-paging",
    "records-sort",
    "records-expand",
    "records-expand-depth",
    "records-fields",
    "records-view",
    "records-create-json",
    "records-create-multipart",
    "records-update-modifiers",
    "records-delete",
    "records-ids",
]

BATCH = [
    "batch-transactional",
    "batch-limits",
]

FILTERS = [
    "filters-operators",
    "filters-any-of",
    "filters-logic",
    "filters-literals",
    "filters-date-macros",
    "filters-request",
    "filters-collection-join",
    "filters-modifiers",
    "filters-relations",
    "filters-json",
    "filters-geo",
    "filters-errors",
]

RULES = [
    "rules-null-and-empty",
    "rules-filter",
    "rules-request-body",
    "rules-request-context",
    "rules-collection-and-relations",
    "rules-invalid",
    "rules-auth-user",
]

SUPERUSERS = [
    "superusers-auth",
    "superusers-password-change",
    "superusers-records",
]

ERRORS = [
    "errors-shape",
    "errors-malformed-bodies",
    "errors-body-limit",
]

# Settings and the rate limits they drive (instance-wide state: engines of their own).
SETTINGS = [
    "settings-read-write",
    "settings-rate-limits",
]

# Scenarios that change instance-wide state run on engines of their own.
ISOLATED = [
    "collections-import-delete-missing",
    "batch-disabled-by-default",
]

ALL = [
    *COLLECTIONS,
    *RECORDS,
    *BATCH,
    *FILTERS,
    *RULES,
    *SUPERUSERS,
    *ERRORS,
    *SETTINGS,
    *ISOLATED,
]
