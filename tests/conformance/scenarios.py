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

# Auth records through the records API (manageRule, email/verified/password changes).
AUTH_RECORDS = [
    "auth-records-manage-rule",
    "auth-records-password-login",
    "auth-records-oauth2-secrets",
    "auth-records-options-validation",
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

# E-mail auth flows and the test e-mail, with a real SMTP server per engine (mail=True).
AUTH_EMAIL = [
    "auth-email-verification",
    "auth-email-verification-without-password-auth",
    "auth-email-password-reset",
    "auth-email-change",
    "auth-email-expired-tokens",
    "auth-email-rate-limits",
    "auth-email-test-email",
    "auth-email-login-alert",
]

# OTP, MFA, impersonation and auth-methods, with a real SMTP server per engine (mail=True),
# each scenario on engines of its own (the superusers' and the rate limiters' state).
AUTH_OTP = [
    "auth-methods-true-state",
    "auth-otp-request",
    "auth-otp-login",
    "auth-otp-rate-limit",
    "auth-mfa",
    "auth-mfa-and-otp-expiry",
    "auth-impersonate",
    "auth-superuser-otp-mfa",
]

# OAuth2 (auth-with-oauth2, /api/oauth2-redirect) through PocketBase's generic OIDC provider and
# real OpenID providers on loopback (oidc=True).
AUTH_OAUTH2 = [
    "auth-oauth2-refusals",
    "auth-oauth2-signup",
    "auth-oauth2-mapped-fields-and-create-data",
    "auth-oauth2-unverified-email",
    "auth-oauth2-link-existing",
]

# Realtime over SSE through the SDK's RealtimeService (rules, expand and fields per subscriber).
REALTIME = [
    "realtime-rules-expand-fields",
    "realtime-subscription-refusals",
    "realtime-cascade-delete",
    "realtime-auth-resets",
]

FILES = [
    "files-upload-download",
    "files-thumbs",
    "files-protected-token",
]

# The request log (instance-wide: engines of their own per scenario), through the SDK's LogService.
LOGS = [
    "logs-list-view-stats",
    "logs-settings",
]

# The cron jobs of a fresh instance, listed and run through the SDK's CronService (isolated).
CRONS = [
    "crons-list-run",
]

# Batches with file uploads (pb.createBatch() with File values) and failing ones.
BATCH_FILES = [
    "batch-files-upload",
    "batch-files-rollback",
]

# Files through view collections, and uploads to hidden file fields.
VIEW_FILES = [
    "files-view-collection",
    "files-hidden-field",
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
    *AUTH_RECORDS,
    *ERRORS,
    *SETTINGS,
    *AUTH_EMAIL,
    *AUTH_OTP,
    *AUTH_OAUTH2,
    *REALTIME,
    *FILES,
    *BATCH_FILES,
    *VIEW_FILES,
    *LOGS,
    *CRONS,
    *ISOLATED,
]

# Migrations applied at start and reverted by `migrate down` (test_conformance_migrations.py:
# engines of their own, each started on the same migrations written for it).
MIGRATIONS = ("migrations-applied", "migrations-reverted")
ALL += MIGRATIONS

# The collection editor's helpers (scaffolds, OAuth2 providers, dry-run of a view query) and the
# SQL console (test_conformance_collections_meta.py, on shared engines).
COLLECTIONS_META = (
    "collections-meta-scaffolds",
    "collections-meta-oauth2-providers",
    "collections-meta-dry-run-view",
    "sql-console",
)
ALL += COLLECTIONS_META

# Backups through the SDK's BackupService and the superuser members of /api/health
# (test_conformance_backups.py: engines of their own per scenario; restores are instance-wide).
BACKUPS = ("backups-create-list-delete", "backups-upload", "backups-restore")
ALL += BACKUPS

# View collections' fields inferred from their query (a table of queries, dry-run and saved) and
# what an update does to them (test_conformance_views.py, on shared engines).
VIEWS = ("views-inference", "views-update")
ALL += VIEWS
