/// The same steps as ../pocketfleet/1700000002_create_books.py.
migrate((app) => {
  const authors = app.findCollectionByNameOrId("mig_authors");
  const books = new Collection({
    type: "base",
    name: "mig_books",
    listRule: "",
    fields: [
      { type: "text", name: "title", required: true },
      { type: "relation", name: "author", collectionId: authors.id, maxSelect: 1 },
    ],
  });
  app.save(books);
}, (app) => {
  app.delete(app.findCollectionByNameOrId("mig_books"));
});
