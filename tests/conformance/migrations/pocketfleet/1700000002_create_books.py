"""The same steps as ../pocketbase/1700000002_create_books.js."""

from instance_runtime.hooks import MigrationApp


def up(app: MigrationApp) -> None:
    authors = app.collections.get("mig_authors")
    app.collections.save(
        {
            "type": "base",
            "name": "mig_books",
            "listRule": "",
            "fields": [
                {"type": "text", "name": "title", "required": True},
                {"type": "relation", "name": "author", "collectionId": authors.id, "maxSelect": 1},
            ],
        }
    )


def down(app: MigrationApp) -> None:
    app.collections.delete("mig_books")
