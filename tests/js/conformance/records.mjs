// Records API scenarios (/api/collections/NAME/records), as the superuser unless said otherwise.
import { idSet, pluck } from './trace.mjs';

/** Creates `name` with `fields` (and `extra` collection options); returns the collection. */
export const collection = (t, name, fields, extra = {}) =>
  t.ok(`create collection ${name}`, () => t.pb.collections.create({ name, type: 'base', fields, ...extra }));

/** Creates the records `rows` in `name` one by one; returns them in order. */
export async function seed(t, name, rows) {
  const created = [];
  for (const [i, row] of rows.entries()) {
    created.push(await t.ok(`seed ${name} #${i + 1}`, () => t.pb.collection(name).create(row)));
  }
  return created;
}

/** authors <- posts (author, tags) <- comments (post), plus countries of authors. */
async function blog(t, p) {
  const countries = await collection(t, `${p}_countries`, [{ name: 'code', type: 'text' }]);
  const authors = await collection(t, `${p}_authors`, [
    { name: 'name', type: 'text' },
    { name: 'country', type: 'relation', collectionId: countries.id, maxSelect: 1 },
  ]);
  const posts = await collection(t, `${p}_posts`, [
    { name: 'title', type: 'text' },
    { name: 'body', type: 'editor' },
    { name: 'rank', type: 'number' },
    { name: 'author', type: 'relation', collectionId: authors.id, maxSelect: 1 },
    { name: 'coauthors', type: 'relation', collectionId: authors.id, maxSelect: 5 },
  ]);
  await collection(t, `${p}_comments`, [
    { name: 'text', type: 'text' },
    { name: 'post', type: 'relation', collectionId: posts.id, maxSelect: 1 },
  ]);
  const [bg, fr] = await seed(t, `${p}_countries`, [{ code: 'BG' }, { code: 'FR' }]);
  const [ann, bob] = await seed(t, `${p}_authors`, [
    { name: 'Ann', country: bg.id },
    { name: 'Bob', country: fr.id },
  ]);
  const body =
    '<p>PocketBase is an open source backend consisting of an embedded database, ' +
    'realtime subscriptions, built-in auth management and much more.</p>';
  const postRows = [
    { title: 'first', body, rank: 3, author: ann.id, coauthors: [bob.id] },
    { title: 'second', body: '<p>short</p>', rank: 1, author: bob.id, coauthors: [] },
    { title: 'third', body, rank: 2, author: ann.id, coauthors: [ann.id, bob.id] },
  ];
  const posts_ = await seed(t, `${p}_posts`, postRows);
  await seed(t, `${p}_comments`, [
    { text: 'c1', post: posts_[0].id },
    { text: 'c2', post: posts_[0].id },
    { text: 'c3', post: posts_[2].id },
  ]);
  return { ann, bob, posts: posts_ };
}

export default {
  async 'records-list-paging'(t) {
    await t.login();
    await collection(t, 'rp_items', [{ name: 'n', type: 'number' }]);
    await seed(
      t,
      'rp_items',
      Array.from({ length: 7 }, (_, i) => ({ n: i + 1 })),
    );
    const items = t.pb.collection('rp_items');
    await t.ok('default page and perPage', () => items.getList(undefined, undefined, { sort: 'n' }));
    await t.ok('page 2 of perPage 3', () => items.getList(2, 3, { sort: 'n' }));
    await t.ok('last, partial page', () => items.getList(3, 3, { sort: 'n' }));
    await t.ok('beyond the last page', () => items.getList(9, 3, { sort: 'n' }));
    await t.ok('perPage 1000 (the maximum)', () => items.getList(1, 1000, { sort: 'n', fields: 'n' }));
    await t.ok('perPage 1001 is capped', () => items.getList(1, 1001, { sort: 'n', fields: 'n' }));
    await t.ok('perPage 0', () => items.getList(1, 0, { sort: 'n', fields: 'n' }));
    await t.ok('page 0', () => items.getList(0, 2, { sort: 'n', fields: 'n' }));
    await t.ok('negative page and perPage', () => items.getList(-1, -5, { sort: 'n', fields: 'n' }));
    await t.ok('skipTotal', () => items.getList(2, 3, { sort: 'n', skipTotal: true }));
    await t.ok('skipTotal with a filter', () =>
      items.getList(1, 2, { sort: '-n', filter: 'n > 2', skipTotal: true, fields: 'n' }),
    );
    await t.ok('full list in batches of 3', () => items.getFullList({ batch: 3, sort: '-n', fields: 'n' }));
    await t.ok('first list item', () => items.getFirstListItem('n >= 4', { sort: 'n' }));
    await t.raw(
      'non-numeric page and perPage',
      400,
      '/api/collections/rp_items/records?page=x&perPage=y&sort=n&fields=n',
    );
    await t.fails('list of an unknown collection', 404, () => t.pb.collection('rp_none').getList());
  },

  async 'records-sort'(t) {
    await t.login();
    await collection(t, 'rs_items', [
      { name: 'name', type: 'text' },
      { name: 'group', type: 'number' },
      { name: 'when', type: 'date' },
    ]);
    const rows = [
      { name: 'delta', group: 2, when: '2024-01-04 00:00:00.000Z' },
      { name: 'alpha', group: 1, when: '2024-01-02 00:00:00.000Z' },
      { name: 'charlie', group: 2, when: '2024-01-01 00:00:00.000Z' },
      { name: 'bravo', group: 1, when: '' },
      { name: 'Echo', group: 3, when: '2024-01-03 00:00:00.000Z' },
    ];
    const created = await seed(t, 'rs_items', rows);
    const items = t.pb.collection('rs_items');
    const names = { pick: (list) => pluck(list, 'name') };
    await t.ok('sort by name', () => items.getFullList({ sort: 'name' }), names);
    await t.ok('sort by -name', () => items.getFullList({ sort: '-name' }), names);
    await t.ok('sort by group, then -name', () => items.getFullList({ sort: 'group,-name' }), names);
    await t.ok(
      'sort by +group then name (explicit +)',
      () => items.getFullList({ sort: '+group,name' }),
      names,
    );
    await t.ok('sort by date (empty first)', () => items.getFullList({ sort: 'when' }), names);
    await t.ok('sort by @rowid (insertion order)', () => items.getFullList({ sort: '@rowid' }), names);
    await t.ok('sort by -@rowid', () => items.getFullList({ sort: '-@rowid' }), names);
    const byId = await t.ok('sort by id', () => items.getFullList({ sort: 'id' }), {
      pick: (list) => list.length,
    });
    t.check('sorted by id', JSON.stringify(pluck(byId ?? [], 'id')) === JSON.stringify(idSet(created)));
    const random = await t.ok(
      'sort by @random: the same set of records',
      () => items.getFullList({ sort: '@random' }),
      {
        pick: (list) => pluck(list, 'name').sort(),
      },
    );
    t.check(
      '@random returns every record once',
      JSON.stringify(idSet(random ?? [])) === JSON.stringify(idSet(created)),
    );
    await t.ok('page 2 with sort', () => items.getList(2, 2, { sort: 'name' }), {
      pick: (r) => ({ ...r, items: pluck(r.items, 'name') }),
    });
    await t.fails('sort by an unknown field', 400, () => items.getFullList({ sort: 'nope' }));
    await t.fails('sort by @unknown', 400, () => items.getFullList({ sort: '@nope' }));
  },

  async 'records-expand'(t) {
    await t.login();
    const { posts } = await blog(t, 're');
    const list = t.pb.collection('re_posts');
    await t.ok('expand a single relation', () => list.getFullList({ sort: 'title', expand: 'author' }));
    await t.ok('expand a multiple relation', () => list.getFullList({ sort: 'title', expand: 'coauthors' }));
    await t.ok('expand nested and several', () =>
      list.getFullList({ sort: 'title', expand: 'author.country,coauthors' }),
    );
    await t.ok('expand a back-relation', () =>
      t.pb.collection('re_authors').getFullList({ sort: 'name', expand: 're_posts_via_author' }),
    );
    await t.ok('expand a back-relation of a multiple relation, then forward', () =>
      t.pb.collection('re_authors').getFullList({ sort: 'name', expand: 're_posts_via_coauthors.author' }),
    );
    await t.ok('expand back-relation comments of posts', () =>
      list.getFullList({ sort: 'title', expand: 're_comments_via_post' }),
    );
    await t.ok('view with expand', () =>
      t.pb.collection('re_comments').getFirstListItem('text = "c3"', { expand: 'post.author.country' }),
    );
    await t.ok('getOne with expand', () => list.getOne(posts[0].id, { expand: 'author,coauthors.country' }));
    await t.ok('expand of an unknown field is ignored', () =>
      list.getFullList({ sort: 'title', expand: 'nope', fields: 'title,expand' }),
    );
    await t.ok('expand of a non-relation field is ignored', () =>
      list.getFullList({ sort: 'title', expand: 'title', fields: 'title,expand' }),
    );
    await t.ok('expand with an empty relation', async () => {
      const solo = await t.pb.collection('re_posts').create({ title: 'solo', rank: 9 });
      return list.getOne(solo.id, { expand: 'author,coauthors' });
    });
  },

  async 'records-expand-depth'(t) {
    await t.login();
    // l1.next -> l2 ... -> l8: expand follows at most 6 levels.
    let previous;
    for (let i = 8; i >= 1; i -= 1) {
      const fields = [{ name: 'label', type: 'text' }];
      if (previous) fields.push({ name: 'next', type: 'relation', collectionId: previous.id, maxSelect: 1 });
      previous = await collection(t, `rd_l${i}`, fields);
    }
    let next;
    for (let i = 8; i >= 1; i -= 1) {
      const row = { label: `level ${i}` };
      if (next) row.next = next.id;
      next = await t.ok(`create level ${i}`, () => t.pb.collection(`rd_l${i}`).create(row));
    }
    await t.ok('expand 6 levels', () =>
      t.pb.collection('rd_l1').getOne(next.id, { expand: 'next.next.next.next.next.next' }),
    );
    await t.ok('expand 7 levels: the 7th is left out', () =>
      t.pb.collection('rd_l1').getOne(next.id, { expand: 'next.next.next.next.next.next.next' }),
    );
  },

  async 'records-fields'(t) {
    await t.login();
    const { posts } = await blog(t, 'rf');
    const list = t.pb.collection('rf_posts');
    await t.ok('fields=title,rank', () => list.getFullList({ sort: 'title', fields: 'title,rank' }));
    await t.ok('fields with an unknown name', () =>
      list.getFullList({ sort: 'title', fields: 'title,nope' }),
    );
    await t.ok('fields=*', () => list.getFullList({ sort: 'title', fields: '*' }));
    await t.ok('fields=*,expand.author.name', () =>
      list.getFullList({ sort: 'title', expand: 'author', fields: '*,expand.author.name' }),
    );
    await t.ok('fields=title,expand.author.expand.country.code', () =>
      list.getFullList({
        sort: 'title',
        expand: 'author.country',
        fields: 'title,expand.author.expand.country.code',
      }),
    );
    await t.ok('excerpt(20)', () => list.getFullList({ sort: 'title', fields: 'title,body:excerpt(20)' }));
    await t.ok('excerpt(20,true)', () =>
      list.getFullList({ sort: 'title', fields: 'title,body:excerpt(20,true)' }),
    );
    await t.ok('excerpt(200,true) of a short text', () =>
      list.getFullList({ sort: 'title', fields: 'body:excerpt(200,true)' }),
    );
    await t.ok('fields on view', () => list.getOne(posts[1].id, { fields: 'id,title' }));
    await t.ok('fields on a paged list keeps the list envelope', () =>
      list.getList(1, 2, { sort: 'title', fields: 'title' }),
    );
    await t.ok('fields with spaces', () => list.getFullList({ sort: 'title', fields: ' title , rank ' }));
    await t.fails('fields with an unbalanced parenthesis', 400, () =>
      list.getFullList({ sort: 'title', fields: 'title,body:excerpt(20' }),
    );
    await t.fails('fields with an unclosed quote', 400, () => list.getOne(posts[1].id, { fields: "'title" }));
  },

  async 'records-view'(t) {
    await t.login();
    await collection(t, 'rv_items', [
      { name: 'title', type: 'text' },
      { name: 'n', type: 'number' },
    ]);
    const [a] = await seed(t, 'rv_items', [{ title: 'a', n: 1 }]);
    const items = t.pb.collection('rv_items');
    await t.ok('view by id', () => items.getOne(a.id));
    await t.fails('view an unknown id', 404, () => items.getOne('nosuchrecord00'));
    await t.fails('view of an unknown collection', 404, () => t.pb.collection('rv_none').getOne(a.id));
    await t.fails('anonymous view (rule null): superusers only', 403, () =>
      t.anon.collection('rv_items').getOne(a.id),
    );
    await t.ok('view through the collection id', async () => {
      const c = await t.pb.collections.getOne('rv_items');
      return t.pb.collection(c.id).getOne(a.id);
    });
  },

  async 'records-create-json'(t) {
    await t.login();
    await collection(t, 'rc_items', [
      { name: 'title', type: 'text', required: true, max: 10 },
      { name: 'n', type: 'number', required: true },
      { name: 'flag', type: 'bool' },
      { name: 'tags', type: 'select', values: ['a', 'b'], maxSelect: 2 },
      { name: 'data', type: 'json' },
      { name: 'when', type: 'date' },
      { name: 'mail', type: 'email' },
    ]);
    const items = t.pb.collection('rc_items');
    await t.ok('create', () =>
      items.create({
        title: 'hello',
        n: 1.5,
        flag: true,
        tags: ['b', 'a'],
        data: [1, 'x', null],
        when: '2024-02-03 04:05:06Z',
        mail: 'x@y.example',
      }),
    );
    await t.ok('values are cast: number from a string, bool from a string, select from a string', () =>
      items.create({
        title: 'cast',
        n: '42',
        flag: 'true',
        tags: 'a',
        data: 'plain string',
        when: '2024-02-03',
      }),
    );
    await t.ok('unknown keys are ignored', () => items.create({ title: 'extra', n: 2, nope: 1 }));
    await t.fails('required fields missing', 400, () => items.create({}));
    await t.fails('zero values of required fields', 400, () => items.create({ title: '', n: 0 }));
    await t.fails('too long, invalid email, invalid select, invalid date', 400, () =>
      items.create({ title: 'far too long a title', n: 1, mail: 'nope', tags: ['z'], when: 'yesterday' }),
    );
    await t.fails('a non-numeric number', 400, () => items.create({ title: 'x', n: 'abc' }));
    await t.fails('create in an unknown collection', 404, () =>
      t.pb.collection('rc_none').create({ title: 'x' }),
    );
    await t.fails('anonymous create (rule null)', 403, () =>
      t.anon.collection('rc_items').create({ title: 'x', n: 1 }),
    );
    await t.ok('what was created', () =>
      items.getFullList({ sort: '@rowid', fields: 'title,n,flag,tags,data,when,mail' }),
    );
  },

  async 'records-create-multipart'(t) {
    await t.login();
    await collection(t, 'rm_items', [
      { name: 'title', type: 'text', required: true },
      { name: 'n', type: 'number' },
      { name: 'flag', type: 'bool' },
      { name: 'tags', type: 'select', values: ['a', 'b', 'c'], maxSelect: 3 },
      { name: 'data', type: 'json' },
    ]);
    const items = t.pb.collection('rm_items');
    await t.ok('create from FormData', () => {
      const form = new FormData();
      form.append('title', 'from a form');
      form.append('n', '12.5');
      form.append('flag', 'true');
      form.append('tags', 'a');
      form.append('tags', 'c');
      form.append('data', '{"k": [1, 2]}');
      return items.create(form);
    });
    await t.ok('create from FormData with @jsonPayload', () => {
      const form = new FormData();
      form.append('@jsonPayload', JSON.stringify({ title: 'payload', n: 3, tags: ['b'], data: { x: 1 } }));
      form.append('flag', 'false');
      return items.create(form);
    });
    await t.ok('a form value that is not JSON in a json field', () => {
      const form = new FormData();
      form.append('title', 'not json');
      form.append('data', 'hello');
      return items.create(form);
    });
    await t.fails('FormData missing a required field', 400, () => {
      const form = new FormData();
      form.append('n', '1');
      return items.create(form);
    });
    await t.ok('update from FormData', async () => {
      const [first] = await items.getFullList({ sort: '@rowid' });
      const form = new FormData();
      form.append('n', '99');
      form.append('tags', '');
      return items.update(first.id, form);
    });
    await t.ok('what was stored', () =>
      items.getFullList({ sort: '@rowid', fields: 'title,n,flag,tags,data' }),
    );
  },

  async 'records-update-modifiers'(t) {
    await t.login();
    const people = await collection(t, 'ru_people', [{ name: 'name', type: 'text' }]);
    await collection(t, 'ru_items', [
      { name: 'title', type: 'text' },
      { name: 'n', type: 'number' },
      { name: 'tags', type: 'select', values: ['a', 'b', 'c', 'd'], maxSelect: 4 },
      { name: 'one', type: 'select', values: ['a', 'b'], maxSelect: 1 },
      { name: 'people', type: 'relation', collectionId: people.id, maxSelect: 5 },
    ]);
    const [p1, p2, p3] = await seed(t, 'ru_people', [{ name: 'p1' }, { name: 'p2' }, { name: 'p3' }]);
    const items = t.pb.collection('ru_items');
    const item = await t.ok('create', () =>
      items.create({ title: 't', n: 10, tags: ['b'], people: [p1.id] }),
    );
    await t.ok('n+ adds', () => items.update(item.id, { 'n+': 5 }));
    await t.ok('n- subtracts', () => items.update(item.id, { 'n-': 7.5 }));
    await t.ok('tags+ appends', () => items.update(item.id, { 'tags+': 'c' }));
    await t.ok('+tags prepends', () => items.update(item.id, { '+tags': ['a'] }));
    await t.ok('tags- removes', () => items.update(item.id, { 'tags-': ['b', 'd'] }));
    await t.ok('tags+ of a value already there', () => items.update(item.id, { 'tags+': 'a' }));
    await t.ok('people+ appends, people- removes, in one request', () =>
      items.update(item.id, { 'people+': [p2.id, p3.id], 'people-': p1.id }),
    );
    await t.ok('+people prepends', () => items.update(item.id, { '+people': p1.id }));
    await t.ok('one+ on a single select replaces', () => items.update(item.id, { 'one+': 'b' }));
    await t.ok('a plain value and a modifier of the same field', () =>
      items.update(item.id, { n: 1, 'n+': 2 }),
    );
    await t.fails('people+ of an unknown record', 400, () =>
      items.update(item.id, { 'people+': 'missingmissing1' }),
    );
    await t.fails('tags+ of an invalid value', 400, () => items.update(item.id, { 'tags+': 'z' }));
    await t.ok('the record now', () => items.getOne(item.id, { expand: 'people' }));
    await t.fails('update an unknown record', 404, () => items.update('missingmissing1', { n: 1 }));
    await t.ok('update with nothing changes nothing but updated', () => items.update(item.id, {}));
  },

  async 'records-delete'(t) {
    await t.login();
    const parents = await collection(t, 'rx_parents', [{ name: 'name', type: 'text' }]);
    await collection(t, 'rx_cascade', [
      { name: 'parent', type: 'relation', collectionId: parents.id, maxSelect: 1, cascadeDelete: true },
    ]);
    await collection(t, 'rx_loose', [
      { name: 'parents', type: 'relation', collectionId: parents.id, maxSelect: 3 },
    ]);
    await collection(t, 'rx_required', [
      { name: 'parent', type: 'relation', collectionId: parents.id, maxSelect: 1, required: true },
    ]);
    const [p1, p2, p3] = await seed(t, 'rx_parents', [{ name: 'p1' }, { name: 'p2' }, { name: 'p3' }]);
    await seed(t, 'rx_cascade', [{ parent: p1.id }, { parent: p1.id }, { parent: p2.id }]);
    await seed(t, 'rx_loose', [{ parents: [p1.id, p2.id] }]);
    const [held] = await seed(t, 'rx_required', [{ parent: p3.id }]);
    await t.ok('delete p1: cascades, and unlinks from the loose relation', () =>
      t.pb.collection('rx_parents').delete(p1.id),
    );
    await t.ok('cascade children left', () => t.pb.collection('rx_cascade').getFullList({ sort: '@rowid' }));
    await t.ok('loose relation now', () => t.pb.collection('rx_loose').getFullList({ sort: '@rowid' }));
    await t.fails('delete p3 while a required relation points at it', 400, () =>
      t.pb.collection('rx_parents').delete(p3.id),
    );
    await t.ok('p3 still there', () => t.pb.collection('rx_parents').getOne(p3.id));
    await t.ok('delete the record holding it', () => t.pb.collection('rx_required').delete(held.id));
    await t.ok('now p3 can go', () => t.pb.collection('rx_parents').delete(p3.id));
    await t.fails('delete it again', 404, () => t.pb.collection('rx_parents').delete(p3.id));
    await t.fails('anonymous delete (rule null): superusers only', 403, () =>
      t.anon.collection('rx_parents').delete(p2.id),
    );
    await t.ok('parents left', () => t.pb.collection('rx_parents').getFullList({ sort: 'name' }));
  },

  async 'records-ids'(t) {
    await t.login();
    await collection(t, 'ri_items', [{ name: 'title', type: 'text' }]);
    const items = t.pb.collection('ri_items');
    t.keep('givenid00000001', 'givenid00000002');
    await t.ok('a valid client id', () => items.create({ id: 'givenid00000001', title: 'given' }));
    await t.ok('view it by that id', () => items.getOne('givenid00000001'));
    await t.fails('the same id again', 400, () => items.create({ id: 'givenid00000001', title: 'again' }));
    await t.fails('too short', 400, () => items.create({ id: 'short', title: 'x' }));
    await t.fails('too long', 400, () => items.create({ id: 'givenid000000001', title: 'x' }));
    await t.fails('upper case', 400, () => items.create({ id: 'GIVENID00000003', title: 'x' }));
    await t.fails('invalid characters', 400, () => items.create({ id: 'given-id_000004', title: 'x' }));
    await t.ok('an empty id is generated', () => items.create({ id: '', title: 'generated' }), {
      pick: (r) => ({ ...r, id: /^[a-z0-9]{15}$/.test(r.id) }),
    });
    await t.ok('generated ids are 15 characters [a-z0-9]', async () => {
      const r = await items.create({ title: 'auto' });
      return /^[a-z0-9]{15}$/.test(r.id);
    });
    await t.fails('the id cannot be changed by an update', 400, () =>
      items.update('givenid00000001', { id: 'givenid00000002', title: 'moved' }),
    );
    await t.ok('ids now', () => items.getFullList({ sort: 'title', fields: 'title' }));
  },
};
