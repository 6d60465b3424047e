/// The same steps as ../pocketfleet/1700000003_books_pages_and_index.py.
migrate((app) => {
  const books = app.findCollectionByNameOrId("mig_books");
  books.fields.addAt(2, new Field({ type: "number", name: "pages", min: 1, onlyInt: true }));
  books.addIndex("idx_mig_books_title", false, "title", "");
  app.save(books);
}, (app) => {
  const books = app.findCollectionByNameOrId("mig_books");
  books.fields.removeByName("pages");
  books.removeIndex("idx_mig_books_title");
  app.save(books);
});
