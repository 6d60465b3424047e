// Migrations, seen through the SDK (test_conformance_migrations.py runs these): each engine is
// started on a folder of the same migrations written for it (tests/conformance/migrations/
// pocketbase/*.js, pocketfleet/*.py: an auth collection, a collection with a relation to it, a
// field and an index added, two records inserted), applied at start; then, after
// `migrate down 2` and a restart, the same again.
const AUTHOR = { id: 'migauthor000001', email: 'mig-author@example.com', password: 'mig-author-pass-1' };
const BOOK_ID = 'migbook00000001';
const INDEX = 'idx_mig_books_title';

const collections = (t) => t.ok('every collection', () => t.pb.collections.getFullList({ sort: 'name' }));
const byName = (all, name) => (all ?? []).find((c) => c.name === name);
const hasPages = (books) => Boolean(books?.fields.some((f) => f.name === 'pages'));
const hasIndex = (books) => Boolean(books?.indexes.some((i) => i.includes(INDEX)));

export default {
  async 'migrations-applied'(t) {
    t.keep(AUTHOR.id, BOOK_ID);
    await t.login();
    const all = await collections(t);
    const books = byName(all, 'mig_books');
    t.check('the authors are an auth collection', byName(all, 'mig_authors')?.type === 'auth');
    t.check('the books got their pages and their index', hasPages(books) && hasIndex(books));
    await t.ok('the books with their authors', () =>
      t.pb.collection('mig_books').getFullList({ expand: 'author' }),
    );
    await t.ok('the author inserted by a migration signs in', () =>
      t.client().collection('mig_authors').authWithPassword(AUTHOR.email, AUTHOR.password),
      { pick: (r) => r.record },
    );
    await t.ok('a book with a relation to that author', () =>
      t.pb.collection('mig_books').create({ title: 'Second', author: AUTHOR.id, pages: 3 }),
      { pick: (r) => ({ title: r.title, author: r.author, pages: r.pages }) },
    );
    await t.fails('the pages field keeps its minimum', 400, () =>
      t.pb.collection('mig_books').create({ title: 'Thin', pages: -2 }),
    );
  },

  async 'migrations-reverted'(t) {
    t.keep(AUTHOR.id, BOOK_ID);
    await t.login();
    const all = await collections(t);
    const books = byName(all, 'mig_books');
    t.check('the books are still there', Boolean(books));
    t.check('without their pages and their index', !hasPages(books) && !hasIndex(books));
    await t.ok('only the book added through the API is left', () =>
      t.pb.collection('mig_books').getFullList({ fields: 'title,author' }),
    );
    await t.ok('no author is left', () => t.pb.collection('mig_authors').getFullList());
    await t.fails('the removed author cannot sign in', 400, () =>
      t.client().collection('mig_authors').authWithPassword(AUTHOR.email, AUTHOR.password),
    );
  },
};
