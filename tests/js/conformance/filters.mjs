// Filter language scenarios: every operator, literal, macro, @request.* / @collection.* source,
// modifier, relation path, back-relation, JSON path and function, and the refusals. Each filter
// is one step whose label is the filter itself, recording the names of the matching records.
import { collection, seed } from './records.mjs';
import { pluck } from './trace.mjs';

/** people <- items (owner, others) <- reviews (item), with varied values; listRule "" on items. */
async function dataset(t, p) {
  const people = await collection(t, `${p}_people`, [
    { name: 'name', type: 'text' },
    { name: 'age', type: 'number' },
    { name: 'city', type: 'text' },
  ]);
  const items = await collection(
    t,
    `${p}_items`,
    [
      { name: 'name', type: 'text' },
      { name: 'n', type: 'number' },
      { name: 'flag', type: 'bool' },
      { name: 'tags', type: 'select', values: ['a', 'b', 'c'], maxSelect: 3 },
      { name: 'color', type: 'select', values: ['red', 'green', 'blue'], maxSelect: 1 },
      { name: 'meta', type: 'json' },
      { name: 'when', type: 'date' },
      { name: 'note', type: 'text' },
      { name: 'owner', type: 'relation', collectionId: people.id, maxSelect: 1 },
      { name: 'others', type: 'relation', collectionId: people.id, maxSelect: 5 },
      { name: 'place', type: 'geoPoint' },
    ],
    { listRule: '', viewRule: '' },
  );
  await collection(t, `${p}_reviews`, [
    { name: 'item', type: 'relation', collectionId: items.id, maxSelect: 1 },
    { name: 'stars', type: 'number' },
  ]);
  const [ann, bob, cyd] = await seed(t, `${p}_people`, [
    { name: 'Ann', age: 30, city: 'Sofia' },
    { name: 'Bob', age: 45, city: 'Paris' },
    { name: 'Cyd', age: 25, city: 'Sofia' },
  ]);
  const rows = [
    {
      name: 'alpha',
      n: 1,
      flag: true,
      tags: ['a'],
      color: 'red',
      meta: { a: { b: 1 }, list: ['x', 'y'], on: true },
      when: '2000-01-01 10:00:00.000Z',
      owner: ann.id,
      others: [ann.id, bob.id],
      place: { lon: 23.32, lat: 42.69 },
    },
    {
      name: 'bravo',
      n: 2,
      flag: false,
      tags: ['a', 'b'],
      color: 'green',
      meta: { a: { b: 2 } },
      when: '2100-01-01 00:00:00.000Z',
      note: 'has a note',
      owner: bob.id,
      others: [bob.id],
      place: { lon: 2.35, lat: 48.86 },
    },
    { name: 'charlie', n: 3, flag: true },
    {
      name: 'Delta',
      n: 3.5,
      tags: ['b', 'c'],
      color: 'blue',
      meta: { a: { b: '2' }, list: [] },
      when: '2000-06-01 00:00:00.000Z',
      owner: cyd.id,
      others: [cyd.id, ann.id],
      place: { lon: 23.3, lat: 42.7 },
    },
    { name: 'quote "q" it\'s 100%', n: -1, note: 'percent % and _' },
  ];
  const created = await seed(t, `${p}_items`, rows);
  await seed(t, `${p}_reviews`, [
    { item: created[0].id, stars: 5 },
    { item: created[0].id, stars: 3 },
    { item: created[1].id, stars: 4 },
  ]);
  return { items: `${p}_items`, people: `${p}_people` };
}

const names = { pick: (list) => pluck(list, 'name') };

/** One step per filter: the names of the matching records, or the expected refusal. */
async function filters(t, name, list, { client = t.pb, options = {} } = {}) {
  for (const filter of list) {
    await t.ok(
      filter,
      () => client.collection(name).getFullList({ sort: 'name', filter, ...options }),
      names,
    );
  }
}

async function refusals(t, name, list) {
  for (const filter of list) {
    await t.fails(`refused: ${filter}`, 400, () => t.pb.collection(name).getFullList({ filter }));
  }
}

export default {
  async 'filters-operators'(t) {
    await t.login();
    const { items } = await dataset(t, 'fo');
    await filters(t, items, [
      'n = 2',
      'n != 2',
      'n > 2',
      'n >= 2',
      'n < 2',
      'n <= 2',
      'n = 3.5',
      'n > -1',
      'name = "alpha"',
      "name = 'alpha'",
      'name = "ALPHA"',
      'name != "alpha"',
      'name ~ "al"',
      'name ~ "AL"',
      'name !~ "al"',
      'name ~ "a%a"',
      'name ~ "%"',
      'note ~ "_"',
      'name ~ "100%"',
      'name = "quote \\"q\\" it\'s 100%"',
      'name > "b"',
      'name <= "bravo"',
      'when > "2050-01-01"',
      'when < "2000-03-01 00:00:00.000Z"',
      'flag = true',
      'flag != true',
      'color = "red"',
      'color != "red"',
      'n = "2"',
      '"alpha" = name',
      '2 < n',
      'n = n',
      'n > 1.99999',
    ]);
  },

  async 'filters-any-of'(t) {
    await t.login();
    const { items } = await dataset(t, 'fa');
    await filters(t, items, [
      'tags ?= "a"',
      'tags ?!= "a"',
      'tags = "a"',
      'tags != "a"',
      'tags ~ "b"',
      'tags ?~ "b"',
      'tags ?!~ "b"',
      'others.age ?> 40',
      'others.age ?>= 45',
      'others.age ?< 26',
      'others.age ?<= 30',
      'others.age > 20',
      'others.age < 40',
      'others.name ?= "Ann"',
      'others.name = "Ann"',
      'others.name ?!= "Ann"',
      'others.name ?~ "o"',
      'others.name ?!~ "o"',
      'others.city ?= "Paris"',
    ]);
  },

  async 'filters-logic'(t) {
    await t.login();
    const { items } = await dataset(t, 'fl');
    await filters(t, items, [
      'n > 1 && flag = true',
      'n > 3 || flag = true',
      '(n > 3 || flag = true) && name != "alpha"',
      'n > 3 || flag = true && name != "alpha"',
      'flag = false && (n < 0 || n > 3)',
      '((n = 1))',
      'n = 1 || n = 2 || n = 3',
      'n >= 1 && n <= 3 && flag = true',
      '(n = 1 || (n = 2 && flag = false)) || name = "Delta"',
      'n = 1 &&\n  flag = true',
      '// a comment\nn = 2',
    ]);
  },

  async 'filters-literals'(t) {
    await t.login();
    const { items } = await dataset(t, 'fn');
    await filters(t, items, [
      'note = null',
      'note != null',
      'note = ""',
      'owner = null',
      'owner != ""',
      'meta = null',
      'meta != null',
      'when = null',
      'when = ""',
      'color = null',
      'tags = null',
      'tags != null',
      'others = null',
      'flag = false',
      'flag = true',
      'flag = null',
      'n = 0',
      'n = null',
      'true = true',
      'true = false',
      'null = null',
      '1 = 1',
      '"a" = "a"',
      'n = -1',
      'n > -1.5',
    ]);
  },

  async 'filters-date-macros'(t) {
    await t.login();
    const { items } = await dataset(t, 'fd');
    await filters(t, items, [
      'when < @now',
      'when > @now',
      'when != "" && when < @todayStart',
      'when > @todayEnd',
      'when < @monthStart',
      'when > @monthEnd',
      'when < @yearStart',
      'when > @yearEnd',
      'when > @yesterday',
      'when < @tomorrow',
      '@now > "2020-01-01"',
      '@year > 2020',
      '@month >= 1 && @month <= 12',
      '@day >= 1',
      '@weekday >= 0 && @weekday <= 6',
      '@hour >= 0',
      '@minute < 60',
      '@second < 60',
      'when != "" && when < @now && n < 2',
      'strftime(\'%Y\', when) = "2000"',
      'strftime(\'%m\', when) = "06"',
    ]);
  },

  async 'filters-request'(t) {
    await t.login();
    const { items } = await dataset(t, 'fr');
    await filters(t, items, [
      '@request.auth.id != "" && n = 1',
      '@request.auth.collectionName = "_superusers" && n = 2',
      `@request.auth.email = "${t.email}" && n = 3`,
      '@request.auth.verified = true && n = 1',
      '@request.method = "GET" && n = 1',
      '@request.context = "default" && n = 2',
      '@request.query.who = "nobody"',
      '@request.body.x = null && n = 1',
    ]);
    for (const filter of ['@request.auth.id = ""', '@request.query.who = ""']) {
      await t.fails(`anonymous: ${filter} (only superusers may filter by @request.*)`, 403, () =>
        t.anon.collection(items).getFullList({ filter }),
      );
    }
    await filters(t, items, ['n > 2'], { client: t.anon });
    const query = { who: 'bravo', limit: '2' };
    await t.ok(
      'name = @request.query.who (?who=bravo)',
      () => t.pb.collection(items).getFullList({ sort: 'name', filter: 'name = @request.query.who', query }),
      names,
    );
    await t.ok(
      'n <= @request.query.limit (?limit=2)',
      () => t.pb.collection(items).getFullList({ sort: 'name', filter: 'n <= @request.query.limit', query }),
      names,
    );
    await t.ok(
      '@request.query.who:isset = true',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: '@request.query.who:isset = true && n = 1', query }),
      names,
    );
    await t.ok(
      '@request.query.other:isset = false',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: '@request.query.other:isset = false && n = 2', query }),
      names,
    );
    const headers = { 'X-Who': 'Delta', 'X-Trace-Id': 'abc' };
    await t.ok(
      'name = @request.headers.x_who (X-Who: Delta)',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: 'name = @request.headers.x_who', headers }),
      names,
    );
    await t.ok(
      '@request.headers.x_trace_id = "abc"',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: '@request.headers.x_trace_id = "abc" && n = 1', headers }),
      names,
    );
    await t.ok(
      '@request.headers.x_missing = ""',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: '@request.headers.x_missing = "" && n = 2', headers }),
      names,
    );
  },

  async 'filters-collection-join'(t) {
    await t.login();
    const { items, people } = await dataset(t, 'fc');
    await filters(t, items, [
      // without "?" an operator must hold for every row of the joined collection
      `@collection.${people}.name = owner.name && @collection.${people}.city = "Sofia"`,
      `@collection.${people}.age > 20`,
      `@collection.${people}.age > 40`,
      `@collection.${people}.name ?= owner.name && @collection.${people}.city ?= "Sofia"`,
      `@collection.${people}.age ?> 40 && n < 2`,
      `@collection.${people}.age ?> 99`,
      `@collection.${people}:p.name ?= owner.name && @collection.${people}:p.age ?< 28`,
      `@collection.${people}:a.city ?= "Paris" && @collection.${people}:b.city ?= "Sofia" && n = 1`,
      `@collection.${people}.name ?= "Bob" && n < 2`,
      `@collection.${people}.name ?= others.name && n > 0`,
    ]);
    await refusals(t, items, ['@collection.fc_missing.name = "x"', `@collection.${people}.nope = 1`]);
  },

  async 'filters-modifiers'(t) {
    await t.login();
    const { items } = await dataset(t, 'fm');
    await filters(t, items, [
      'tags:length = 0',
      'tags:length > 1',
      'others:length = 2',
      'others:length < 1',
      'tags:each = "a"',
      'tags:each ~ "b"',
      'tags:each != "c"',
      'name:lower = "delta"',
      'name:lower ~ "del"',
      'owner.name:lower = "ann"',
      'others.name:lower ?= "bob"',
      // accepted, though meaningless outside @request.* / on a single value
      'name:isset = true',
      'n:length > 1',
    ]);
    await refusals(t, items, ['name:nope = 1', 'fm_reviews_via_item:length = 2']);
  },

  async 'filters-relations'(t) {
    await t.login();
    const { items } = await dataset(t, 'fp');
    await filters(t, items, [
      'owner.name = "Ann"',
      'owner.age > 26',
      'owner.city = "Sofia" && owner.age < 30',
      'owner.id != ""',
      'owner.name != "Ann"',
      'owner = ""',
      'fp_reviews_via_item.stars ?> 4',
      'fp_reviews_via_item.stars > 2',
      'fp_reviews_via_item.stars ?= 4',
      'fp_reviews_via_item.id != ""',
      'fp_reviews_via_item.id = ""',
      'fp_reviews_via_item.stars:length = 2',
    ]);
    await filters(t, 'fp_people', [
      'fp_items_via_owner.n > 1',
      'fp_items_via_others.name ?= "alpha"',
      'fp_items_via_owner.others.name ?= "Bob"',
    ]);
    await refusals(t, items, ['owner.nope = 1', 'fp_reviews_via_nope.stars > 1', 'nope_via_item.stars > 1']);
  },

  async 'filters-json'(t) {
    await t.login();
    const { items } = await dataset(t, 'fj');
    await filters(t, items, [
      'meta.a.b = 1',
      'meta.a.b = 2',
      'meta.a.b = "2"',
      'meta.a.b > 0',
      'meta.on = true',
      'meta.list.0 = "x"',
      'meta.list.1 = "y"',
      'meta.missing = null',
      'meta.a.missing != null',
      'meta.list:length = 2',
      'meta ~ "list"',
    ]);
  },

  async 'filters-geo'(t) {
    await t.login();
    const { items } = await dataset(t, 'fg');
    await filters(t, items, [
      'geoDistance(place.lon, place.lat, 23.32, 42.69) < 10',
      'geoDistance(place.lon, place.lat, 23.32, 42.69) < 2000',
      'geoDistance(place.lon, place.lat, 2.35, 48.86) > 100',
      'geoDistance(23.32, 42.69, place.lon, place.lat) <= 0.5',
    ]);
    await refusals(t, items, ['geoDistance(place.lon, place.lat) < 10', 'nope(n) = 1']);
  },

  async 'filters-errors'(t) {
    await t.login();
    const { items } = await dataset(t, 'fe');
    await refusals(t, items, [
      'nope = 1',
      'n = ',
      'n == 1',
      '= 1',
      'n = "unterminated',
      '(n = 1',
      'n = 1)',
      'n = 1 &&',
      '&& n = 1',
      'n = 1 and n = 2',
      'n @ 1',
      '@request.nope = 1',
      '@nope = 1',
      'n = @unknownMacro',
      'owner.name.x = 1',
      '@collection = 1',
      'n === 1',
      'n = 1 || || n = 2',
      '"unclosed',
    ]);
    await t.fails('refused: an unknown field, anonymously', 400, () =>
      t.anon.collection(items).getFullList({ filter: 'nope = 1' }),
    );
    await t.fails('refused: a filter on the view endpoint via getFirstListItem', 400, () =>
      t.pb.collection(items).getFirstListItem('n = '),
    );
    await t.ok(
      'an empty filter is no filter',
      () => t.pb.collection(items).getFullList({ sort: 'name', filter: '' }),
      names,
    );
    await t.fails('a filter of spaces is refused', 400, () =>
      t.pb.collection(items).getFullList({ filter: '   ' }),
    );
    await t.ok(
      'a parameterised filter (pb.filter) with quotes',
      () =>
        t.pb.collection(items).getFullList({
          sort: 'name',
          filter: t.pb.filter('name = {:name} || n = {:n}', { name: 'quote "q" it\'s 100%', n: 2 }),
        }),
      names,
    );
    await t.ok(
      'an injection attempt matches nothing',
      () =>
        t.pb
          .collection(items)
          .getFullList({ sort: 'name', filter: t.pb.filter('name = {:v}', { v: '" || 1=1 || "' }) }),
      names,
    );
  },
};
