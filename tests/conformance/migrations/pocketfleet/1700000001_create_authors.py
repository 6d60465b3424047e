"""The same steps as ../pocketbase/1700000001_create_authors.js."""

from instance_runtime.hooks import MigrationApp


def up(app: MigrationApp) -> None:
    app.collections.save(
        {
            "type": "auth",
            "name": "mig_authors",
            "listRule": "",
            "viewRule": "",
            "fields": [{"type": "text", "name": "nickname", "max": 40}],
        }
    )


def down(app: MigrationApp) -> None:
    app.collections.delete("mig_authors")
