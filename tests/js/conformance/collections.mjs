// Collections API scenarios (/api/collections, superusers only).
import { matching } from './trace.mjs';

const slug = matching({ slug: /^[a-z]{8}$/ });

/** One field of every type the runtime supports, each with non-default options. */
const everyFieldType = (relatedId) => [
  {
    name: 'title',
    type: 'text',
    required: true,
    min: 2,
    max: 50,
    pattern: '^[A-Za-z ]+$',
    presentable: true,
  },
  { name: 'slug', type: 'text', autogeneratePattern: '[a-z]{8}', hidden: true },
  { name: 'count', type: 'number', min: 0, max: 100, onlyInt: true },
  { name: 'done', type: 'bool' },
  { name: 'contact', type: 'email', onlyDomains: ['example.com'] },
  { name: 'site', type: 'url', exceptDomains: ['bad.example'] },
  { name: 'body', type: 'editor', maxSize: 2000, convertURLs: true },
  { name: 'due', type: 'date', min: '2020-01-01 00:00:00.000Z', max: '2030-01-01 00:00:00.000Z' },
  { name: 'created', type: 'autodate', onCreate: true, onUpdate: false },
  { name: 'updated', type: 'autodate', onCreate: true, onUpdate: true },
  { name: 'color', type: 'select', values: ['red', 'green', 'blue'], maxSelect: 1 },
  { name: 'tags', type: 'select', values: ['a', 'b', 'c'], maxSelect: 2 },
  { name: 'meta', type: 'json', maxSize: 1000 },
  { name: 'owner', type: 'relation', collectionId: relatedId, maxSelect: 1, cascadeDelete: true },
  { name: 'others', type: 'relation', collectionId: relatedId, maxSelect: 5, minSelect: 0 },
  { name: 'doc', type: 'file', maxSelect: 1, maxSize: 1024, mimeTypes: ['text/plain'] },
  { name: 'secret', type: 'password', min: 10, max: 50 },
  { name: 'place', type: 'geoPoint' },
];

const fieldsOf = (collection) => collection?.fields?.map((f) => f.name);

export default {
  async 'collections-list'(t) {
    await t.login();
    for (const name of ['cl_charlie', 'cl_alpha', 'cl_bravo']) {
      await t.ok(`create ${name}`, () =>
        t.pb.collections.create({ name, type: 'base', fields: [{ name: 'n', type: 'text' }] }),
      );
    }
    await t.ok('system collections of a fresh instance', () =>
      t.pb.collections.getFullList({
        filter: 'system = true || name = "users"',
        sort: 'name',
        fields: 'name,type,system',
      }),
    );
    await t.ok('page 1 of 2, filtered and sorted by -name', () =>
      t.pb.collections.getList(1, 2, { filter: 'name ~ "cl_"', sort: '-name' }),
    );
    await t.ok('page 2 of 2', () =>
      t.pb.collections.getList(2, 2, { filter: 'name ~ "cl_"', sort: '-name' }),
    );
    await t.ok('page 3 is empty', () =>
      t.pb.collections.getList(3, 2, { filter: 'name ~ "cl_"', sort: '-name' }),
    );
    await t.ok('skipTotal', () =>
      t.pb.collections.getList(1, 2, {
        filter: 'name ~ "cl_"',
        sort: 'name',
        skipTotal: true,
        fields: 'name',
      }),
    );
    await t.ok('full list with fields', () =>
      t.pb.collections.getFullList({
        filter: 'name ~ "cl_" && type = "base"',
        sort: 'name',
        fields: 'id,name',
      }),
    );
    await t.ok('first list item', () => t.pb.collections.getFirstListItem('name = "cl_bravo"'));
    await t.fails('first list item that does not exist', 404, () =>
      t.pb.collections.getFirstListItem('name = "cl_nothing"'),
    );
    await t.fails('filter on an unknown field', 400, () =>
      t.pb.collections.getList(1, 5, { filter: 'nope = 1' }),
    );
    await t.fails('malformed filter', 400, () => t.pb.collections.getList(1, 5, { filter: 'name = ' }));
    await t.fails('sort by an unknown field', 400, () => t.pb.collections.getList(1, 5, { sort: 'nope' }));
    await t.fails('anonymous list', 401, () => t.anon.collections.getList(1, 5));
  },

  async 'collections-view'(t) {
    await t.login();
    const created = await t.ok('create cv_notes', () =>
      t.pb.collections.create({ name: 'cv_notes', type: 'base', fields: [{ name: 'title', type: 'text' }] }),
    );
    const byId = await t.ok('view by id', () => t.pb.collections.getOne(created.id));
    const byName = await t.ok('view by name', () => t.pb.collections.getOne('cv_notes'));
    t.check('same collection by id and by name', JSON.stringify(byId) === JSON.stringify(byName));
    await t.ok('view _superusers', () => t.pb.collections.getOne('_superusers'));
    await t.ok('view with fields', () => t.pb.collections.getOne('cv_notes', { fields: 'name,fields.name' }));
    await t.fails('view an unknown collection', 404, () => t.pb.collections.getOne('cv_missing'));
    await t.fails('anonymous view', 401, () => t.anon.collections.getOne('cv_notes'));
  },

  async 'collections-create-every-field-type'(t) {
    await t.login();
    const related = await t.ok('create the related collection', () =>
      t.pb.collections.create({ name: 'cf_people', type: 'base', fields: [{ name: 'name', type: 'text' }] }),
    );
    const created = await t.ok('create a base collection with every field type', () =>
      t.pb.collections.create({
        name: 'cf_everything',
        type: 'base',
        listRule: '',
        viewRule: 'count > 1',
        fields: everyFieldType(related.id),
      }),
    );
    t.note('field names in order', fieldsOf(created));
    await t.ok('view it back', () => t.pb.collections.getOne('cf_everything'));
    const person = await t.ok('create a related record', () =>
      t.pb.collection('cf_people').create({ name: 'Ann' }),
    );
    await t.ok(
      'create a record using every field',
      () =>
        t.pb.collection('cf_everything').create({
          title: 'Hello World',
          count: 7,
          done: true,
          contact: 'ann@example.com',
          site: 'https://good.example/x',
          body: '<p>hi</p>',
          due: '2024-05-06 07:08:09.123Z',
          color: 'red',
          tags: ['a', 'c'],
          meta: { a: { b: [1, 2] } },
          owner: person.id,
          others: [person.id],
          secret: 'a-long-password',
          place: { lon: 23.32, lat: 42.69 },
        }),
      { pick: slug },
    );
    await t.ok(
      'an empty record: every field at its zero value',
      () => t.pb.collection('cf_everything').create({ title: 'Empty' }),
      { pick: slug },
    );
    await t.ok('anonymous list: hidden fields are left out', () =>
      t.anon.collection('cf_everything').getFullList({ sort: 'title' }),
    );
    await t.fails('a record breaking every option', 400, () =>
      t.pb.collection('cf_everything').create({
        title: 'x1',
        count: 101.5,
        contact: 'ann@elsewhere.org',
        site: 'https://bad.example/',
        due: '2040-01-01 00:00:00.000Z',
        color: 'purple',
        tags: ['a', 'b', 'c'],
        owner: 'missingmissingx',
        secret: 'short',
        place: { lon: 200, lat: 0 },
      }),
    );
  },

  async 'collections-create-view'(t) {
    await t.login();
    await t.ok('create the source collection', () =>
      t.pb.collections.create({
        name: 'cw_posts',
        type: 'base',
        fields: [
          { name: 'title', type: 'text' },
          { name: 'score', type: 'number' },
          { name: 'published', type: 'bool' },
        ],
      }),
    );
    for (const [title, score, published] of [
      ['a', 1, true],
      ['b', 5, false],
      ['c', 9, true],
    ]) {
      await t.ok(`create post ${title}`, () =>
        t.pb.collection('cw_posts').create({ title, score, published }),
      );
    }
    await t.ok('create a view collection', () =>
      t.pb.collections.create({
        name: 'cw_published',
        type: 'view',
        listRule: '',
        viewRule: '',
        viewQuery:
          'SELECT id, title, score AS points, (score * 2) AS doubled FROM cw_posts WHERE published = TRUE',
      }),
    );
    await t.ok('list the view', () => t.pb.collection('cw_published').getList(1, 10, { sort: 'title' }));
    await t.ok('filter the view', () =>
      t.pb.collection('cw_published').getFullList({ filter: 'points > 5', sort: 'title' }),
    );
    await t.ok('view one record of the view', async () => {
      const [first] = await t.pb.collection('cw_published').getFullList({ sort: 'title' });
      return t.pb.collection('cw_published').getOne(first.id);
    });
    await t.ok('anonymous list of the view', () =>
      t.anon.collection('cw_published').getFullList({ sort: '-points' }),
    );
    await t.fails('create a record in a view', 400, () =>
      t.pb.collection('cw_published').create({ title: 'nope' }),
    );
    await t.fails('a view without id', 400, () =>
      t.pb.collections.create({ name: 'cw_bad1', type: 'view', viewQuery: 'SELECT title FROM cw_posts' }),
    );
    await t.fails('a view with an invalid query', 400, () =>
      t.pb.collections.create({ name: 'cw_bad2', type: 'view', viewQuery: 'SELECT nonsense FROM nowhere' }),
    );
    await t.fails('a view with a write statement', 400, () =>
      t.pb.collections.create({ name: 'cw_bad3', type: 'view', viewQuery: 'DELETE FROM cw_posts' }),
    );
  },

  async 'collections-create-refusals'(t) {
    await t.login();
    await t.ok('create cr_taken', () => t.pb.collections.create({ name: 'cr_taken', type: 'base' }));
    await t.fails('a duplicate name', 400, () => t.pb.collections.create({ name: 'cr_taken', type: 'base' }));
    await t.fails('a duplicate name, other case', 400, () => t.pb.collections.create({ name: 'CR_TAKEN' }));
    await t.fails('no name', 400, () => t.pb.collections.create({ type: 'base' }));
    await t.fails('an invalid name', 400, () => t.pb.collections.create({ name: 'bad name!' }));
    await t.ok('a name starting with an underscore is allowed', () =>
      t.pb.collections.create({ name: '_cr_under' }),
    );
    await t.fails('an unknown type', 400, () => t.pb.collections.create({ name: 'cr_t', type: 'other' }));
    await t.fails('an unknown field type', 400, () =>
      t.pb.collections.create({ name: 'cr_f1', fields: [{ name: 'x', type: 'nope' }] }),
    );
    await t.ok('duplicate field names: the last one wins', () =>
      t.pb.collections.create({
        name: 'cr_f2',
        fields: [
          { name: 'x', type: 'text' },
          { name: 'x', type: 'number' },
        ],
      }),
    );
    await t.fails('an invalid field name', 400, () =>
      t.pb.collections.create({ name: 'cr_f3', fields: [{ name: 'a b', type: 'text' }] }),
    );
    await t.fails('a select without values', 400, () =>
      t.pb.collections.create({ name: 'cr_f4', fields: [{ name: 's', type: 'select' }] }),
    );
    await t.fails('a relation to an unknown collection', 400, () =>
      t.pb.collections.create({
        name: 'cr_f5',
        fields: [{ name: 'r', type: 'relation', collectionId: 'nope' }],
      }),
    );
    await t.fails('an invalid rule', 400, () =>
      t.pb.collections.create({ name: 'cr_f6', listRule: 'missing = 1' }),
    );
    await t.fails('anonymous create', 401, () => t.anon.collections.create({ name: 'cr_anon' }));
    await t.ok('nothing was created', () =>
      t.pb.collections.getFullList({ filter: 'name ~ "cr_"', sort: 'name', fields: 'name' }),
    );
  },

  async 'collections-update-schema'(t) {
    await t.login();
    const created = await t.ok('create cu_items', () =>
      t.pb.collections.create({
        name: 'cu_items',
        type: 'base',
        fields: [
          { name: 'title', type: 'text' },
          { name: 'count', type: 'number' },
          { name: 'obsolete', type: 'text' },
        ],
      }),
    );
    const items = t.pb.collection('cu_items');
    const a = await t.ok('create item a', () => items.create({ title: 'a', count: 1, obsolete: 'x' }));
    await t.ok('create item b', () => items.create({ title: 'b', count: 2, obsolete: 'y' }));
    const fields = created.fields;
    await t.ok('add a field', () =>
      t.pb.collections.update('cu_items', { fields: [...fields, { name: 'extra', type: 'bool' }] }),
    );
    await t.ok('records after adding', () => items.getFullList({ sort: 'title' }));
    const renamed = fields.map((f) => (f.name === 'title' ? { ...f, name: 'headline' } : f));
    const afterRename = await t.ok('rename title to headline (same field id)', () =>
      t.pb.collections.update('cu_items', { fields: renamed }),
    );
    await t.ok('records after renaming', () => items.getFullList({ sort: 'headline' }));
    await t.ok('filter by the new name', () => items.getFullList({ filter: 'headline = "b"' }));
    await t.fails('filter by the old name', 400, () => items.getFullList({ filter: 'title = "b"' }));
    const dropped = afterRename.fields.filter((f) => f.name !== 'obsolete');
    await t.ok('drop a field', () => t.pb.collections.update('cu_items', { fields: dropped }));
    await t.ok('records after dropping', () => items.getFullList({ sort: 'headline' }));
    const capped = dropped.map((f) => (f.name === 'count' ? { ...f, max: 1 } : f));
    await t.ok('change an option', () => t.pb.collections.update('cu_items', { fields: capped }));
    await t.fails('the new option applies to updates', 400, () => items.update(a.id, { count: 5 }));
    await t.ok('rename the collection and set rules', () =>
      t.pb.collections.update(created.id, { name: 'cu_things', listRule: '', viewRule: 'count > 0' }),
    );
    await t.ok('records under the new name', () =>
      t.pb.collection('cu_things').getFullList({ sort: 'headline' }),
    );
    await t.fails('the old name is gone', 404, () => t.pb.collection('cu_items').getList(1, 10));
    await t.fails('change the type of a field', 400, () =>
      t.pb.collections.update('cu_things', {
        fields: capped.map((f) => (f.name === 'headline' ? { ...f, type: 'number' } : f)),
      }),
    );
    await t.fails('change the collection type', 400, () =>
      t.pb.collections.update('cu_things', { type: 'view' }),
    );
    await t.fails('update an unknown collection', 404, () =>
      t.pb.collections.update('cu_none', { listRule: '' }),
    );
    await t.ok('unchanged', () => t.pb.collections.getOne('cu_things'));
  },

  async 'collections-delete'(t) {
    await t.login();
    const target = await t.ok('create cd_target', () =>
      t.pb.collections.create({ name: 'cd_target', fields: [{ name: 'n', type: 'text' }] }),
    );
    await t.ok('create cd_referrer', () =>
      t.pb.collections.create({
        name: 'cd_referrer',
        fields: [{ name: 'ref', type: 'relation', collectionId: target.id }],
      }),
    );
    await t.ok('create cd_alone', () => t.pb.collections.create({ name: 'cd_alone' }));
    await t.ok('create a record in cd_alone', () => t.pb.collection('cd_alone').create({}));
    await t.fails('delete a collection still referenced by a relation', 400, () =>
      t.pb.collections.delete('cd_target'),
    );
    await t.ok('delete cd_alone', () => t.pb.collections.delete('cd_alone'));
    await t.fails('it is gone', 404, () => t.pb.collections.getOne('cd_alone'));
    await t.fails('its records are gone', 404, () => t.pb.collection('cd_alone').getList(1, 5));
    await t.fails('delete it again', 404, () => t.pb.collections.delete('cd_alone'));
    await t.ok('delete the referrer by id', async () =>
      t.pb.collections.delete((await t.pb.collections.getOne('cd_referrer')).id),
    );
    await t.ok('now the target can go', () => t.pb.collections.delete('cd_target'));
    await t.ok('create cd_viewed', () =>
      t.pb.collections.create({ name: 'cd_viewed', fields: [{ name: 'n', type: 'text' }] }),
    );
    await t.ok('create a view over it', () =>
      t.pb.collections.create({ name: 'cd_view', type: 'view', viewQuery: 'SELECT id, n FROM cd_viewed' }),
    );
    await t.fails('delete a collection a view depends on', 400, () => t.pb.collections.delete('cd_viewed'));
    await t.fails('delete _superusers', 400, () => t.pb.collections.delete('_superusers'));
    await t.fails('anonymous delete', 401, () => t.anon.collections.delete('cd_view'));
  },

  async 'collections-truncate'(t) {
    await t.login();
    await t.ok('create ct_items', () =>
      t.pb.collections.create({ name: 'ct_items', fields: [{ name: 'n', type: 'number' }] }),
    );
    for (const n of [1, 2, 3])
      await t.ok(`create item ${n}`, () => t.pb.collection('ct_items').create({ n }));
    await t.ok('truncate', () => t.pb.collections.truncate('ct_items'));
    await t.ok('no records left', () => t.pb.collection('ct_items').getList(1, 10));
    await t.ok('the collection is still there', () =>
      t.pb.collections.getOne('ct_items', { fields: 'name' }),
    );
    await t.ok('create a view', () =>
      t.pb.collections.create({ name: 'ct_view', type: 'view', viewQuery: 'SELECT id, n FROM ct_items' }),
    );
    await t.fails('truncate a view', 400, () => t.pb.collections.truncate('ct_view'));
    await t.fails('truncate an unknown collection', 404, () => t.pb.collections.truncate('ct_none'));
    await t.fails('anonymous truncate', 401, () => t.anon.collections.truncate('ct_items'));
  },

  async 'collections-import'(t) {
    await t.login();
    await t.ok('create ci_existing', () =>
      t.pb.collections.create({ name: 'ci_existing', fields: [{ name: 'a', type: 'text' }] }),
    );
    await t.ok('create a record in ci_existing', () => t.pb.collection('ci_existing').create({ a: 'kept' }));
    const existing = await t.pb.collections.getOne('ci_existing');
    await t.ok('import: one new collection and one updated', () =>
      t.pb.collections.import([
        { name: 'ci_new', type: 'base', fields: [{ name: 'x', type: 'number' }] },
        { ...existing, fields: [...existing.fields, { name: 'b', type: 'bool' }], listRule: '' },
      ]),
    );
    await t.ok('the new collection', () => t.pb.collections.getOne('ci_new'));
    await t.ok('the updated collection', () => t.pb.collections.getOne('ci_existing'));
    await t.ok('its record kept its data', () => t.pb.collection('ci_existing').getFullList());
    await t.fails('import an invalid collection: nothing is applied', 400, () =>
      t.pb.collections.import([
        { name: 'ci_fine', type: 'base' },
        { name: 'ci_broken', type: 'base', fields: [{ name: 'x', type: 'nope' }] },
      ]),
    );
    await t.fails('ci_fine was not created', 404, () => t.pb.collections.getOne('ci_fine'));
    await t.fails('import an empty list', 400, () => t.pb.collections.import([]));
    await t.fails('anonymous import', 401, () => t.anon.collections.import([{ name: 'ci_anon' }]));
  },

  async 'collections-indexes'(t) {
    await t.login();
    const created = await t.ok('create with a unique and a plain index', () =>
      t.pb.collections.create({
        name: 'cx_people',
        fields: [
          { name: 'email', type: 'email' },
          { name: 'city', type: 'text' },
        ],
        indexes: [
          'CREATE UNIQUE INDEX idx_cx_email ON cx_people (email)',
          'CREATE INDEX idx_cx_city ON cx_people (city)',
        ],
      }),
    );
    const people = t.pb.collection('cx_people');
    await t.ok('create ann', () => people.create({ email: 'ann@example.com', city: 'x' }));
    await t.fails('a duplicate value of a unique index', 400, () =>
      people.create({ email: 'ann@example.com', city: 'y' }),
    );
    await t.ok('drop the unique index, keep the other', () =>
      t.pb.collections.update('cx_people', { indexes: [created.indexes[1]] }),
    );
    await t.ok('a duplicate is fine now', () => people.create({ email: 'ann@example.com', city: 'z' }));
    await t.fails('a unique index over duplicates', 400, () =>
      t.pb.collections.update('cx_people', {
        indexes: ['CREATE UNIQUE INDEX idx_cx_email2 ON cx_people (email)'],
      }),
    );
    await t.fails('an index on an unknown column', 400, () =>
      t.pb.collections.update('cx_people', { indexes: ['CREATE INDEX idx_cx_bad ON cx_people (nope)'] }),
    );
    await t.fails('an invalid index statement', 400, () =>
      t.pb.collections.update('cx_people', { indexes: ['DROP TABLE cx_people'] }),
    );
    await t.ok('indexes now', () => t.pb.collections.getOne('cx_people', { fields: 'indexes' }));
  },

  async 'collections-system-protected'(t) {
    await t.login();
    const superusers = await t.ok('view _superusers', () => t.pb.collections.getOne('_superusers'));
    await t.fails('rename _superusers', 400, () =>
      t.pb.collections.update('_superusers', { name: 'admins' }),
    );
    await t.ok('dropping a system field of _superusers is ignored: it comes back last', () =>
      t.pb.collections.update('_superusers', { fields: superusers.fields.filter((f) => f.name !== 'email') }),
    );
    await t.fails('delete _superusers', 400, () => t.pb.collections.delete('_superusers'));
    await t.fails('truncate _superusers', 400, () => t.pb.collections.truncate('_superusers'));
    const base = await t.ok('create cs_base', () =>
      t.pb.collections.create({ name: 'cs_base', fields: [{ name: 'n', type: 'text' }] }),
    );
    await t.ok('dropping the id field is ignored: it comes back', () =>
      t.pb.collections.update('cs_base', { fields: base.fields.filter((f) => f.name !== 'id') }),
    );
    await t.fails('rename the id field', 400, () =>
      t.pb.collections.update('cs_base', {
        fields: base.fields.map((f) => (f.name === 'id' ? { ...f, name: 'key' } : f)),
      }),
    );
    await t.fails('a field named like a system field', 400, () =>
      t.pb.collections.update('cs_base', {
        fields: [...base.fields, { name: 'collectionId', type: 'text' }],
      }),
    );
    await t.fails('a field named expand', 400, () =>
      t.pb.collections.create({ name: 'cs_expand', fields: [{ name: 'expand', type: 'text' }] }),
    );
    await t.ok('_superusers unchanged', () =>
      t.pb.collections.getOne('_superusers', { fields: 'name,system' }),
    );
  },

  // Instance-wide: runs on engines of its own.
  async 'collections-import-delete-missing'(t) {
    await t.login();
    await t.ok('create cm_kept', () =>
      t.pb.collections.create({ name: 'cm_kept', fields: [{ name: 'a', type: 'text' }] }),
    );
    await t.ok('create cm_dropped', () => t.pb.collections.create({ name: 'cm_dropped' }));
    await t.ok('create a record in cm_kept', () => t.pb.collection('cm_kept').create({ a: 'still here' }));
    const kept = await t.pb.collections.getOne('cm_kept');
    await t.ok('import with deleteMissing: the others go, system collections stay', () =>
      t.pb.collections.import([kept, { name: 'cm_added', type: 'base' }], true),
    );
    await t.ok('the collections now', () =>
      t.pb.collections.getFullList({ sort: 'name', fields: 'name,type,system' }),
    );
    await t.ok('cm_kept kept its records', () => t.pb.collection('cm_kept').getFullList({ fields: 'a' }));
  },
};
