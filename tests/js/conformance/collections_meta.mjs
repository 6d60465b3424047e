// The collection editor's helpers and the SQL console, through the SDK's CollectionService
// (`getScaffolds`, `getAllOAuth2Providers`, `dryRunViewQuery`) and `pb.send('/api/sql')`: what
// each answers to a superuser, and that guests (401) and users (403) are refused.
//
// Random parts are described, not compared: the scaffolds' index id (the same in both indexes),
// the temporary view's name of a dry-run sample, the console's execTime.
const USER_PASSWORD = 'meta-user-pass-1';

async function signedInUser(t, email) {
  await t.ok(`a regular user ${email}`, () =>
    t.pb.collection('users').create({ email, password: USER_PASSWORD, passwordConfirm: USER_PASSWORD }),
    { pick: (r) => r.email },
  );
  const user = t.client();
  await t.ok(`${email} signs in`, () => user.collection('users').authWithPassword(email, USER_PASSWORD), {
    pick: (r) => r.record.email,
  });
  return user;
}

const INDEX_ID = /^CREATE UNIQUE INDEX `idx_(tokenKey|email)_([a-z0-9]{10})` ON `` /;

/** The scaffolds with the random index id replaced, and whether both indexes share it. */
const scaffoldsPick = (scaffolds) => {
  const ids = new Set();
  const indexes = (scaffolds.auth?.indexes ?? []).map((raw) => {
    const match = INDEX_ID.exec(raw);
    if (!match) return raw;
    ids.add(match[2]);
    return raw.replace(match[2], '<random10>');
  });
  return { ...scaffolds, auth: { ...scaffolds.auth, indexes }, sharedIndexId: ids.size === 1 };
};

const TEMP_VIEW = /^temp_view_[A-Za-z0-9]{5}$/;

/** A dry-run result with each sample record's temporary view name described. */
const dryRunPick = (result) => ({
  ...result,
  sample: (result.sample ?? []).map((r) => ({
    ...r,
    collectionName: TEMP_VIEW.test(r.collectionName) ? '<temp_view_XXXXX>' : r.collectionName,
  })),
});

const sqlPick = (result) => ({ ...result, execTime: typeof result.execTime });

export default {
  async 'collections-meta-scaffolds'(t) {
    await t.fails('guests may not read the scaffolds', 401, () => t.anon.collections.getScaffolds());
    await t.login();
    const user = await signedInUser(t, 'meta-scaffolds@example.com');
    await t.fails('a user may not read the scaffolds', 403, () => user.collections.getScaffolds());
    await t.ok('the scaffolds', () => t.pb.collections.getScaffolds(), { pick: scaffoldsPick });
    await t.raw('the scaffolds, raw, as a guest', 401, '/api/collections/meta/scaffolds', {}, { auth: false });
  },

  async 'collections-meta-oauth2-providers'(t) {
    await t.fails('guests may not list the providers', 401, () => t.anon.collections.getAllOAuth2Providers());
    await t.login();
    const user = await signedInUser(t, 'meta-providers@example.com');
    await t.fails('a user may not list the providers', 403, () => user.collections.getAllOAuth2Providers());
    await t.ok('every provider, in order, with its logo', () => t.pb.collections.getAllOAuth2Providers());
  },

  async 'collections-meta-dry-run-view'(t) {
    await t.fails('guests may not dry-run a view', 401, () => t.anon.collections.dryRunViewQuery('select 1 as id'));
    await t.login();
    const user = await signedInUser(t, 'meta-dry-run@example.com');
    await t.fails('a user may not dry-run a view', 403, () => user.collections.dryRunViewQuery('select 1 as id'));
    await t.ok('the source collection', () =>
      t.pb.collections.create({
        name: 'cm_posts',
        fields: [
          { name: 'title', type: 'text' },
          { name: 'n', type: 'number' },
          { name: 'flag', type: 'bool' },
          { name: 'data', type: 'json' },
          { name: 'secret', type: 'text', hidden: true },
        ],
      }),
      { pick: (c) => c.name },
    );
    t.keep('cmpost000000001', 'cmpost000000002');
    for (const [id, title, n, flag, data] of [
      ['cmpost000000001', 'hello', 2, true, { a: [1, 2] }],
      ['cmpost000000002', 'world', 2, false, null],
    ]) {
      await t.ok(`post ${id}`, () =>
        t.pb.collection('cm_posts').create({ id, title, n, flag, data, secret: 's' }),
        { pick: (r) => r.id },
      );
    }
    const ok = (label, query) => t.ok(label, () => t.pb.collections.dryRunViewQuery(query), { pick: dryRunPick });
    const fails = (label, query) => t.fails(label, 400, () => t.pb.collections.dryRunViewQuery(query));
    await ok('a constant id', 'select 1 as id');
    await ok('a trailing semicolon', 'select 1 as id;');
    await ok('collection fields keep their types', 'select id, title, n, flag, data, secret from cm_posts order by id');
    await ok('expressions are json', "select id, n+1 as m, json_object('a', 1) as o, '[1]' as arr, 'txt' as s, null as z from cm_posts");
    await ok('row numbers as ids', 'select (ROW_NUMBER() OVER()) as id, title from cm_posts');
    await ok('an empty sample', 'select id, title from cm_posts where 0');
    await fails('no query', '');
    await fails('a query over 5000 characters', `select 1 as id ${' '.repeat(4990)}`);
    await ok('a query of exactly 5000 characters', `select 1 as id${' '.repeat(4986)}`);
    await fails('several statements', 'select 1 as id; select 2 as id');
    await fails('no id column', 'select title from cm_posts');
    await fails('an unknown column', 'select nope as id');
    await fails('a write statement', 'CREATE TABLE cm_nope(x INT)');
    await fails('an empty id', "select '' as id");
    await fails('repeated ids', 'select n as id from cm_posts');
    await t.raw('a body that is no JSON', 400, '/api/collections/meta/dry-run-view', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{nope',
    });
    await t.raw('a query that is no string', 400, '/api/collections/meta/dry-run-view', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query": 5}',
    });
    await t.ok('a multipart form body', () => {
      const form = new FormData();
      form.append('query', 'select 2 as id');
      return t.pb.send('/api/collections/meta/dry-run-view', { method: 'POST', body: form });
    }, { pick: dryRunPick });
    await t.fails('nothing was created', 404, () => t.pb.collections.getOne('cm_nope'));
  },

  async 'sql-console'(t) {
    const sql = (client, query) => client.send('/api/sql', { method: 'POST', body: { query } });
    await t.fails('guests may not run SQL', 401, () => sql(t.anon, 'select 1'));
    await t.login();
    const user = await signedInUser(t, 'meta-sql@example.com');
    await t.fails('a user may not run SQL', 403, () => sql(user, 'select 1'));
    const ok = (label, query) => t.ok(label, () => sql(t.pb, query), { pick: sqlPick });
    const fails = (label, query) => t.fails(label, 400, () => sql(t.pb, query));
    await ok('a constant', 'select 1');
    await ok('values of every kind', "select 1.5 as f, null as z, 'é' as u, 9223372036854775807 as big, 1e300 as e, 0.00001 as small, 1234567.0 as m, true as t");
    await ok('a table and two rows in one go', [
      'create table cm_sql_items (id integer primary key, label TEXT NOT NULL, at DATETIME, price REAL, tag varchar(10))',
      "insert into cm_sql_items (label, at, price, tag) values ('a', '2024-01-02 03:04:05', 1.0, 'x'), ('b', 'not a date', 100000000.0, null)",
    ].join('; '));
    await ok('the rows with their declared types', 'select * from cm_sql_items order by id');
    await ok('expressions have no type', 'select label || tag as joined, count(*) over () as n from cm_sql_items order by id');
    await ok('the last of several reads', 'select 1; select label from cm_sql_items order by id desc');
    await ok('an update that changes rows, then one that changes none', "update cm_sql_items set tag = 'y'; update cm_sql_items set tag = 'z' where 0");
    await ok('an update that changes none, then one that changes rows', "update cm_sql_items set tag = 'z' where 0; update cm_sql_items set tag = 'w'");
    await fails('a failing statement undoes the whole write', "insert into cm_sql_items (label) values ('c'); nonsense");
    await ok('so there are still two rows', 'select count(*) from cm_sql_items');
    await ok('a read that deletes', "select 1; delete from cm_sql_items where label = 'b'");
    await ok('the delete happened', 'select label from cm_sql_items');
    await ok('introspection', 'PRAGMA table_info(cm_sql_items)');
    await ok('the collections table', "select name, type, system from _collections where name in ('users', '_superusers') order by name");
    await ok('comments and empty statements', 'select 1; -- the end\n;;');
    await ok('only a comment', '-- nothing');
    await fails('no query', '');
    await fails('a blank query', '   ');
    await fails('a query over 5000 characters', `select '${'a'.repeat(4992)}'`);
    await ok('a query of exactly 5000 characters', `select '${'a'.repeat(4985)}' as id`);
    await fails('nonsense', 'invalid');
    await fails('an unknown table', 'select * from cm_missing');
    await fails('loading an extension', "select load_extension('/nonexistent.so')");
    await ok('drop the table again, with a row changed first', "delete from cm_sql_items; drop table cm_sql_items");
    await t.raw('a body that is no JSON', 400, '/api/sql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{nope',
    });
    await t.raw('a query that is no string', 400, '/api/sql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query": ["select 1"]}',
    });
  },
};
