"""The same steps as ../pocketbase/1700000004_seed.js."""

from instance_runtime.hooks import MigrationApp

PASSWORD = "mig-author-pass-1"


def up(app: MigrationApp) -> None:
    author = app.create(
        "mig_authors",
        {
            "id": "migauthor000001",
            "email": "mig-author@example.com",
            "nickname": "ann",
            "password": PASSWORD,
            "passwordConfirm": PASSWORD,
        },
    )
    app.create(
        "mig_books",
        {"id": "migbook00000001", "title": "First steps", "author": author["id"], "pages": 120},
    )


def down(app: MigrationApp) -> None:
    app.delete("mig_books", "migbook00000001")
    app.delete("mig_authors", "migauthor000001")
