/// The same steps as ../pocketfleet/1700000004_seed.py.
migrate((app) => {
  const author = new Record(app.findCollectionByNameOrId("mig_authors"));
  author.set("id", "migauthor000001");
  author.set("email", "mig-author@example.com");
  author.set("nickname", "ann");
  author.setPassword("mig-author-pass-1");
  app.save(author);

  const book = new Record(app.findCollectionByNameOrId("mig_books"));
  book.set("id", "migbook00000001");
  book.set("title", "First steps");
  book.set("author", author.id);
  book.set("pages", 120);
  app.save(book);
}, (app) => {
  app.delete(app.findRecordById("mig_books", "migbook00000001"));
  app.delete(app.findRecordById("mig_authors", "migauthor000001"));
});
