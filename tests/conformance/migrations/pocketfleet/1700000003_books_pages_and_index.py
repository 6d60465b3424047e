"""The same steps as ../pocketbase/1700000003_books_pages_and_index.js."""

from instance_runtime.hooks import MigrationApp


def up(app: MigrationApp) -> None:
    books = app.collections.draft("mig_books")
    books.add_field_at(2, {"type": "number", "name": "pages", "min": 1, "onlyInt": True})
    books.add_index("idx_mig_books_title", False, "title")
    app.collections.save(books)


def down(app: MigrationApp) -> None:
    books = app.collections.draft("mig_books")
    books.remove_field_by_name("pages")
    books.remove_index("idx_mig_books_title")
    app.collections.save(books)
