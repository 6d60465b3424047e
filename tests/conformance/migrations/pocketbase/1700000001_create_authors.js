/// The same steps as ../pocketfleet/1700000001_create_authors.py (test_conformance_migrations.py).
migrate((app) => {
  const authors = new Collection({
    type: "auth",
    name: "mig_authors",
    listRule: "",
    viewRule: "",
    fields: [{ type: "text", name: "nickname", max: 40 }],
  });
  app.save(authors);
}, (app) => {
  app.delete(app.findCollectionByNameOrId("mig_authors"));
});
