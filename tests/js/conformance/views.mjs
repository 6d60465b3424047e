// View collections' fields as PocketBase infers them from the view query: a table of queries
// (joins, aliases, expressions, aggregates, casts, subqueries, GROUP BY, UNION, json, comments,
// quoted identifiers, a relation, a file field, an auth collection's system fields) each dry-run
// (`pb.collections.dryRunViewQuery`) and saved as a view collection (its fields, its records,
// or the 400 and its message), then what an update does to a view's fields.
//
// Random parts: the `_clone_XXXX` ids of copied fields (masked as ids, so a changed id shows)
// and the temporary view's name of a dry-run sample (described).
import { collection } from './records.mjs';

const TEMP_VIEW = /^temp_view_[A-Za-z0-9]{5}$/;
const dryRunPick = (result) => ({
  ...result,
  sample: (result.sample ?? []).map((r) => ({
    ...r,
    collectionName: TEMP_VIEW.test(r.collectionName) ? '<temp_view_XXXXX>' : r.collectionName,
  })),
});
const OK = 'ok';

// [label, query, expected outcome of the dry run and of the create ('ok' or a status)]
const QUERIES = [
  ['plain columns', 'select id, title, n, flag, data from vw_posts', OK],
  ['file, relation, hidden and autodate fields', 'select id, doc, docs, author, secret, created from vw_posts', OK],
  ['a join with aliases', 'select p.id, p.title as t, u.email, u.name, u.avatar from vw_posts p join vw_users u on u.id = p.author', OK],
  ['a left join with AS', 'select p.id, u.verified as v from vw_posts as p left join vw_users as u on u.id = p.author where p.n > 1', OK],
  ['an auth collection\'s system fields', "select id, email, password, tokenKey, verified, emailVisibility from vw_users where id = 'vwuser000000001'", OK],
  ['counts', 'select id, count(*) as c, count(id) as c2, COUNT( n ) c3 from vw_posts group by id', OK],
  ['other aggregates', 'select id, total(n) as t, sum(n) as s, avg(n) as a, min(n) as mi, max(n) as ma from vw_posts group by id', OK],
  ['scalar functions', 'select id, length(title) as l, abs(n) as ab, round(n) as r, upper(title) as u from vw_posts', OK],
  ['numeric casts', 'select id, cast(n as real) as a, cast(n as int) as b, cast(n as integer) as c, cast(n as decimal) as d, cast(n as numeric) as e from vw_posts', OK],
  ['other casts', 'select id, cast(title as text) as a, cast(flag as boolean) as b, cast(flag as bool) as c, cast(n as varchar) as d, CAST( n AS  REAL ) as f from vw_posts', OK],
  ['nested casts', 'select id, cast(cast(n as text) as real) as a, cast((n) as text) as b from vw_posts', OK],
  ['json functions', "select id, json_extract(data, '$.a') as j, json_object('a', n) as o, json_array(1,2) as arr, data->>'a' as arrow from vw_posts", OK],
  ['comments', 'select id /* a, b */, title -- c, d\n from vw_posts', OK],
  ['quoted identifiers', 'select "id", `title`, [n] from "vw_posts"', OK],
  ['a single-quoted alias', "select id, title as 'tt' from vw_posts", OK],
  ['a subquery in FROM', 'select s.id, s.title from (select id, title from vw_posts) s', OK],
  ['a subquery column', "select id, (select count(*) from vw_users where id = 'vwuser000000001') as uc from vw_posts", OK],
  ['a CTE', 'with x as (select id, title from vw_posts) select id, title from x', OK],
  ['group by with having', 'select author as id, count(*) as total from vw_posts group by author having count(*) > 0', OK],
  ['id columns are relations', 'select p.id, u.id as uid, p.id as pid from vw_posts p join vw_users u on u.id = p.author', OK],
  ['field names match case-insensitively', 'select id, TITLE, Flag from vw_posts', OK],
  ['a view of a view', 'select id, doc, t from vw_base_view', OK],
  ['a relation to a view', 'select v.id as vid, v.t, v.id as id from vw_base_view v', OK],
  ['row numbers as ids', 'select (ROW_NUMBER() OVER()) as id, title from vw_posts', OK],
  ['a numeric id is cast to text', 'select n as id, title from vw_posts where n = 5', OK],
  ['json_each', 'select p.id, j.value as v from vw_posts p, json_each(p.data) j', OK],
  ['a wildcard', 'select * from vw_posts', 400],
  ['a table wildcard', 'select id, vw_posts.* from vw_posts', 400],
  ['a union', 'select id, title from vw_posts union select id, email from vw_users', 400],
  ['a union all with aliases', 'select id, title as x from vw_posts union all select id, name as x from vw_users', 400],
  ['an expression with spaces', 'select id, n + 1 as m from vw_posts', 400],
  ['a CASE expression', 'select id, case when flag then 1 else 0 end as x from vw_posts', 400],
  ['an expression without alias', 'select id, count(*) from vw_posts group by id', 400],
  ['a repeated column', 'select id, title, title from vw_posts', 400],
  ['a reserved name', 'select id, title as expand from vw_posts', 400],
  ['ID is not id', 'SELECT ID, Title FROM vw_posts', 400],
  ['a trailing comment', 'select id, title from vw_posts -- the end', 400],
  ['an unbalanced quote', "select id, 'abc from vw_posts", 400],
  ['non-unique ids', 'select n as id from vw_posts', 400],
  ['a semicolon in a comment', 'select 1 as id /* ; */', 400],
];

export default {
  async 'views-inference'(t) {
    await t.login();
    const open = { listRule: '', viewRule: '' };
    const users = await t.ok('the auth collection', () =>
      t.pb.collections.create({
        name: 'vw_users',
        type: 'auth',
        fields: [{ name: 'name', type: 'text' }, { name: 'avatar', type: 'file', maxSelect: 1 }],
        ...open,
      }),
      { pick: (c) => c.name },
    );
    await collection(t, 'vw_posts', [
      { name: 'title', type: 'text', required: true, presentable: true, max: 50 },
      { name: 'n', type: 'number', onlyInt: true, min: 1 },
      { name: 'flag', type: 'bool' },
      { name: 'data', type: 'json', maxSize: 100 },
      { name: 'doc', type: 'file', maxSelect: 1, mimeTypes: ['text/plain'] },
      { name: 'docs', type: 'file', maxSelect: 3 },
      { name: 'author', type: 'relation', collectionId: users.id, maxSelect: 1 },
      { name: 'secret', type: 'text', hidden: true },
      { name: 'created', type: 'autodate', onCreate: true },
    ], open);
    t.keep('vwuser000000001', 'vwpost000000001', 'vwpost000000002', 'vwpost000000003');
    await t.ok('a user', () =>
      t.pb.collection('vw_users').create({ id: 'vwuser000000001', email: 'vw@example.com', password: 'vw-pass-12345', passwordConfirm: 'vw-pass-12345', name: 'U1' }),
      { pick: (r) => r.id },
    );
    for (const [id, title, n] of [['vwpost000000001', 'a', 2], ['vwpost000000002', 'b', 2], ['vwpost000000003', 'c', 5]]) {
      await t.ok(`post ${id}`, () =>
        t.pb.collection('vw_posts').create({ id, title, n, author: 'vwuser000000001', data: { a: n } }),
        { pick: (r) => r.id },
      );
    }
    await t.ok('a base view', () =>
      t.pb.collections.create({ name: 'vw_base_view', type: 'view', viewQuery: 'select id, doc, title as t from vw_posts', ...open }),
      { pick: (c) => c.fields },
    );
    for (const [index, [label, query, expected]] of QUERIES.entries()) {
      const dry = () => t.pb.collections.dryRunViewQuery(query);
      if (expected === OK) await t.ok(`dry-run: ${label}`, dry, { pick: dryRunPick });
      else await t.fails(`dry-run: ${label}`, expected, dry);
      const name = `vw_q${index}`;
      const create = () => t.pb.collections.create({ name, type: 'view', viewQuery: query, ...open });
      if (expected !== OK) {
        await t.fails(`create: ${label}`, expected, create);
        continue;
      }
      await t.ok(`create: ${label}`, create, { pick: (c) => c.fields });
      await t.ok(`records: ${label}`, () => t.pb.collection(name).getList(1, 5, { sort: 'id', skipTotal: true }), {
        pick: (r) => r.items.map(({ tokenKey, ...rest }) => (tokenKey === undefined ? rest : { ...rest, tokenKey: tokenKey.length })),
      });
      await t.ok(`delete: ${label}`, () => t.pb.collections.delete(name));
    }
  },

  async 'views-update'(t) {
    await t.login();
    const fieldsPick = (c) => c.fields.map((f) => ({ id: f.id, name: f.name, type: f.type, system: f.system }));
    await t.ok('a view of system fields', () =>
      t.pb.collections.create({ name: 'vu_users', type: 'view', viewQuery: 'select id, email, name as n, count(id) as c from users group by id' }),
      { pick: fieldsPick },
    );
    await t.ok('an update of its rules copies the fields afresh', () => t.pb.collections.update('vu_users', { listRule: '' }), {
      pick: fieldsPick,
    });
    await t.ok('fields sent with an update are replaced by the query\'s', () =>
      t.pb.collections.update('vu_users', { viewQuery: 'select id, name as email from users', fields: [{ name: 'x', type: 'text' }] }),
      { pick: fieldsPick },
    );
    await t.ok('read back', () => t.pb.collections.getOne('vu_users'), { pick: fieldsPick });
    await t.fails('a query without id', 400, () => t.pb.collections.update('vu_users', { viewQuery: 'select 1 as x' }));
    await t.fails('a query the parser refuses', 400, () =>
      t.pb.collections.update('vu_users', { viewQuery: 'select id, name || email as x from users' }),
    );
    await t.ok('a constant id is text', () =>
      t.pb.collections.update('vu_users', { viewQuery: "select 1 as id, 'one' as label", listRule: '', viewRule: '' }),
      { pick: fieldsPick },
    );
    await t.ok('its record', () => t.pb.collection('vu_users').getOne('1'));
    await t.ok('delete it', () => t.pb.collections.delete('vu_users'));
  },
};
