// API rule scenarios, with anonymous requests and users of the default `users` auth collection
// (the superuser bypasses every rule): null means superusers only, "" everyone, otherwise a
// filter that narrows lists, hides records (404) and refuses creates without writing anything.
import { collection, seed } from './records.mjs';
import { pluck } from './trace.mjs';

const titles = { pick: (list) => pluck(list, 'title') };
const title = { pick: (record) => record?.title };

export default {
  async 'rules-null-and-empty'(t) {
    await t.login();
    await collection(t, 'ua_locked', [{ name: 'title', type: 'text' }]);
    await collection(t, 'ua_open', [{ name: 'title', type: 'text' }], {
      listRule: '',
      viewRule: '',
      createRule: '',
      updateRule: '',
      deleteRule: '',
    });
    const [locked] = await seed(t, 'ua_locked', [{ title: 'locked' }]);
    const [open] = await seed(t, 'ua_open', [{ title: 'open' }]);
    const anon = t.anon.collection('ua_locked');
    await t.fails('null listRule: anonymous list', 403, () => anon.getList());
    await t.fails('null viewRule: anonymous view', 403, () => anon.getOne(locked.id));
    await t.fails('null createRule: anonymous create', 403, () => anon.create({ title: 'x' }));
    await t.fails('null updateRule: anonymous update', 403, () => anon.update(locked.id, { title: 'x' }));
    await t.fails('null deleteRule: anonymous delete', 403, () => anon.delete(locked.id));
    await t.fails('null rules: an unknown id is still 403', 403, () => anon.getOne('missingmissing1'));
    await t.ok('null rules: nothing changed', () => t.pb.collection('ua_locked').getFullList(), titles);
    const everyone = t.anon.collection('ua_open');
    await t.ok('empty listRule: anonymous list', () => everyone.getList(1, 10), {
      pick: (r) => ({ ...r, items: pluck(r.items, 'title') }),
    });
    await t.ok('empty viewRule: anonymous view', () => everyone.getOne(open.id), title);
    await t.ok('empty createRule: anonymous create', () => everyone.create({ title: 'created' }), title);
    await t.ok(
      'empty updateRule: anonymous update',
      () => everyone.update(open.id, { title: 'updated' }),
      title,
    );
    await t.ok('empty deleteRule: anonymous delete', () => everyone.delete(open.id));
    await t.fails('empty viewRule: an unknown id is 404', 404, () => everyone.getOne('missingmissing1'));
    await t.ok('empty rules: what is there now', () => t.pb.collection('ua_open').getFullList(), titles);
  },

  async 'rules-filter'(t) {
    await t.login();
    await collection(
      t,
      'ub_posts',
      [
        { name: 'title', type: 'text' },
        { name: 'public', type: 'bool' },
        { name: 'locked', type: 'bool' },
      ],
      {
        listRule: 'public = true',
        viewRule: 'public = true',
        createRule: 'title != "forbidden" && public = true',
        updateRule: 'public = true && locked = false',
        deleteRule: 'public = true && locked = false',
      },
    );
    const [shown, hidden, locked] = await seed(t, 'ub_posts', [
      { title: 'shown', public: true },
      { title: 'hidden', public: false },
      { title: 'locked', public: true, locked: true },
    ]);
    const anon = t.anon.collection('ub_posts');
    await t.ok('the list is narrowed by the rule', () => anon.getList(1, 10, { sort: 'title' }), {
      pick: (r) => ({ ...r, items: pluck(r.items, 'title') }),
    });
    await t.ok(
      'the rule and the filter combine',
      () => anon.getFullList({ sort: 'title', filter: 'title ~ "o"' }),
      titles,
    );
    await t.ok(
      'a filter cannot widen the rule',
      () => anon.getFullList({ sort: 'title', filter: 'public = false || public = true' }),
      titles,
    );
    await t.ok('view a shown record', () => anon.getOne(shown.id), title);
    await t.fails('view a hidden record: 404', 404, () => anon.getOne(hidden.id));
    await t.fails('update a hidden record: 404', 404, () => anon.update(hidden.id, { title: 'x' }));
    await t.fails('delete a hidden record: 404', 404, () => anon.delete(hidden.id));
    await t.fails('update a visible record the update rule refuses: 404', 404, () =>
      anon.update(locked.id, { title: 'x' }),
    );
    await t.fails('delete a visible record the delete rule refuses: 404', 404, () => anon.delete(locked.id));
    await t.ok('update a record the rule allows', () => anon.update(shown.id, { title: 'shown2' }), title);
    await t.ok(
      'an update that makes the record fail the rule (rules see the stored record)',
      () => anon.update(shown.id, { locked: true, title: 'shown3' }),
      title,
    );
    await t.fails('a create failing its rule', 400, () => anon.create({ title: 'forbidden', public: true }));
    await t.fails('another create failing its rule', 400, () =>
      anon.create({ title: 'private', public: false }),
    );
    await t.ok('a create passing its rule', () => anon.create({ title: 'allowed', public: true }), title);
    await t.ok(
      'nothing refused was written',
      () => t.pb.collection('ub_posts').getFullList({ sort: 'title' }),
      titles,
    );
    await t.ok(
      'the superuser bypasses every rule',
      () => t.pb.collection('ub_posts').getOne(hidden.id),
      title,
    );
  },

  async 'rules-request-body'(t) {
    await t.login();
    await collection(
      t,
      'uc_items',
      [
        { name: 'title', type: 'text' },
        { name: 'n', type: 'number' },
        { name: 'status', type: 'select', values: ['draft', 'final'], maxSelect: 1 },
      ],
      {
        listRule: '',
        viewRule: '',
        createRule:
          '@request.body.n > 0 && @request.body.title:isset = true && @request.body.status != "final"',
        updateRule: '@request.body.status:changed = false && @request.body.n:isset = false',
        deleteRule: '@request.body.confirm = "yes"',
      },
    );
    const items = t.anon.collection('uc_items');
    await t.ok(
      'create with a body the rule accepts',
      () => items.create({ title: 'ok', n: 1, status: 'draft' }),
      title,
    );
    await t.fails('create with n = 0', 400, () => items.create({ title: 'zero', n: 0 }));
    await t.fails('create without a title', 400, () => items.create({ n: 2 }));
    await t.fails('create with status final', 400, () =>
      items.create({ title: 'fin', n: 1, status: 'final' }),
    );
    const [item] = await t.pb.collection('uc_items').getFullList();
    await t.ok(
      'update without touching status or n',
      () => items.update(item.id, { title: 'renamed' }),
      title,
    );
    await t.ok(
      'update repeating the same status (not a change)',
      () => items.update(item.id, { status: 'draft' }),
      title,
    );
    await t.fails('update changing the status', 404, () => items.update(item.id, { status: 'final' }));
    await t.fails('update sending n', 404, () => items.update(item.id, { n: 5 }));
    await t.fails('delete without a body', 404, () => items.delete(item.id));
    await t.ok('delete with confirm=yes in the body', () =>
      items.delete(item.id, { body: { confirm: 'yes' } }),
    );
    await t.ok('what is left', () => t.pb.collection('uc_items').getFullList({ sort: 'title' }), titles);
  },

  async 'rules-request-context'(t) {
    await t.login();
    await collection(
      t,
      'ud_items',
      [
        { name: 'title', type: 'text' },
        { name: 'owner', type: 'text' },
      ],
      {
        listRule: '@request.headers.x_key = "s3cret" || owner = @request.query.owner',
        viewRule: '@request.method = "GET" && @request.context = "default"',
        createRule: '@request.auth.id != ""',
        updateRule: '@request.auth.collectionName = "_superusers"',
        deleteRule: '@request.auth.id = ""',
      },
    );
    const [a] = await seed(t, 'ud_items', [
      { title: 'a', owner: 'ann' },
      { title: 'b', owner: 'bob' },
    ]);
    const items = t.anon.collection('ud_items');
    await t.ok(
      'list without the header or the query: empty',
      () => items.getFullList({ sort: 'title' }),
      titles,
    );
    await t.ok(
      'list with the X-Key header',
      () => items.getFullList({ sort: 'title', headers: { 'X-Key': 's3cret' } }),
      titles,
    );
    await t.ok(
      'list with a wrong X-Key header',
      () => items.getFullList({ sort: 'title', headers: { 'X-Key': 'nope' } }),
      titles,
    );
    await t.ok(
      'list with ?owner=bob',
      () => items.getFullList({ sort: 'title', query: { owner: 'bob' } }),
      titles,
    );
    await t.ok('view (GET, default context)', () => items.getOne(a.id), title);
    await t.fails('anonymous create where the rule wants auth', 400, () => items.create({ title: 'c' }));
    await t.fails('anonymous update where the rule wants a superuser', 404, () =>
      items.update(a.id, { title: 'x' }),
    );
    await t.ok('anonymous delete where the rule wants no auth', () => items.delete(a.id));
    await t.ok('what is left', () => t.pb.collection('ud_items').getFullList({ sort: 'title' }), titles);
  },

  async 'rules-collection-and-relations'(t) {
    await t.login();
    const teams = await collection(t, 'ue_teams', [
      { name: 'name', type: 'text' },
      { name: 'open', type: 'bool' },
    ]);
    await collection(t, 'ue_tokens', [{ name: 'value', type: 'text' }]);
    await collection(
      t,
      'ue_items',
      [
        { name: 'title', type: 'text' },
        { name: 'team', type: 'relation', collectionId: teams.id, maxSelect: 1 },
      ],
      {
        listRule: 'team.open = true',
        viewRule: '@collection.ue_tokens.value ?= @request.headers.x_token',
        createRule: '@request.body.team.open = true',
      },
    );
    const [open, closed] = await seed(t, 'ue_teams', [
      { name: 'open', open: true },
      { name: 'closed', open: false },
    ]);
    await seed(t, 'ue_tokens', [{ value: 'tok-1' }]);
    const [a] = await seed(t, 'ue_items', [
      { title: 'a', team: open.id },
      { title: 'b', team: closed.id },
    ]);
    const items = t.anon.collection('ue_items');
    await t.ok('list narrowed through a relation', () => items.getFullList({ sort: 'title' }), titles);
    await t.ok(
      'view with a token found in another collection',
      () => items.getOne(a.id, { headers: { 'X-Token': 'tok-1' } }),
      title,
    );
    await t.fails('view with an unknown token', 404, () =>
      items.getOne(a.id, { headers: { 'X-Token': 'tok-2' } }),
    );
    await t.ok('create pointing at an open team', () => items.create({ title: 'c', team: open.id }), title);
    await t.fails('create pointing at a closed team', 400, () =>
      items.create({ title: 'd', team: closed.id }),
    );
    await t.ok('what is there', () => t.pb.collection('ue_items').getFullList({ sort: 'title' }), titles);
  },

  async 'rules-invalid'(t) {
    await t.login();
    await collection(t, 'uf_items', [{ name: 'title', type: 'text' }]);
    for (const [rule, value] of [
      ['listRule', 'nope = 1'],
      ['viewRule', 'title = '],
      ['createRule', '@request.nope = 1'],
      ['updateRule', '@collection.uf_missing.x = 1'],
      ['deleteRule', 'title ~'],
    ]) {
      await t.fails(`${rule}: ${value}`, 400, () => t.pb.collections.update('uf_items', { [rule]: value }));
    }
    await t.ok('rules unchanged', () =>
      t.pb.collections.getOne('uf_items', { fields: 'listRule,viewRule,createRule,updateRule,deleteRule' }),
    );
  },

  async 'rules-auth-user'(t) {
    await t.login();
    const users = t.pb.collection('users');
    const password = 'user-password-1';
    const made = [];
    for (const name of ['Ann', 'Bob']) {
      made.push(
        await t.ok(`create user ${name}`, () =>
          users.create({
            email: `${name.toLowerCase()}@example.com`,
            name,
            password,
            passwordConfirm: password,
          }),
        ),
      );
    }
    const usersCollection = await t.ok('the default users collection', () =>
      t.pb.collections.getOne('users'),
    );
    await collection(
      t,
      'ug_notes',
      [
        { name: 'title', type: 'text' },
        { name: 'public', type: 'bool' },
        { name: 'owner', type: 'relation', collectionId: usersCollection.id, maxSelect: 1 },
      ],
      {
        listRule: 'owner = @request.auth.id',
        viewRule: 'owner = @request.auth.id || public = true',
        createRule: '@request.auth.collectionName = "users" && @request.body.owner = @request.auth.id',
        updateRule: 'owner = @request.auth.id && @request.auth.name = "Ann"',
        deleteRule: 'owner.email = @request.auth.email',
      },
    );
    const asAnn = t.client();
    const asBob = t.client();
    await t.ok('Ann signs in', () => asAnn.collection('users').authWithPassword('ann@example.com', password));
    await t.ok('Bob signs in', () => asBob.collection('users').authWithPassword('bob@example.com', password));
    t.note('a user is no superuser', {
      isValid: asAnn.authStore.isValid,
      isSuperuser: asAnn.authStore.isSuperuser,
    });
    const [annId, bobId] = made.map((u) => u?.id);
    const notes = (client) => client.collection('ug_notes');
    await t.ok(
      'Ann creates her note',
      () => notes(asAnn).create({ title: 'ann private', owner: annId }),
      title,
    );
    await t.ok(
      'Bob creates a public note',
      () => notes(asBob).create({ title: 'bob public', owner: bobId, public: true }),
      title,
    );
    const bobsPrivate = await t.ok(
      'Bob creates a private note',
      () => notes(asBob).create({ title: 'bob private', owner: bobId }),
      title,
    );
    await t.fails('Ann cannot create a note owned by Bob', 400, () =>
      notes(asAnn).create({ title: 'forged', owner: bobId }),
    );
    await t.fails('anonymous create', 400, () => notes(t.anon).create({ title: 'anon', owner: annId }));
    await t.ok('Ann lists her notes only', () => notes(asAnn).getFullList({ sort: 'title' }), titles);
    await t.ok('Bob lists his notes only', () => notes(asBob).getFullList({ sort: 'title' }), titles);
    await t.ok('anonymous list: empty', () => notes(t.anon).getFullList({ sort: 'title' }), titles);
    const bobsPublic = await notes(t.pb).getFirstListItem('title = "bob public"');
    await t.ok("Ann views Bob's public note", () => notes(asAnn).getOne(bobsPublic.id), title);
    await t.fails("Ann cannot view Bob's private note", 404, () => notes(asAnn).getOne(bobsPrivate.id));
    await t.fails("Bob's update rule wants the name Ann", 404, () =>
      notes(asBob).update(bobsPrivate.id, { title: 'x' }),
    );
    await t.fails("Ann cannot delete Bob's note", 404, () => notes(asAnn).delete(bobsPublic.id));
    await t.ok('Bob deletes his note', () => notes(asBob).delete(bobsPublic.id));
    await t.fails('a user may not filter by @request.*', 403, () =>
      notes(asAnn).getFullList({ filter: '@request.auth.id != ""' }),
    );
    await t.ok('users: the default rules show a user only itself', () =>
      asAnn.collection('users').getFullList({ sort: 'name' }),
    );
    await t.fails('users: another user is hidden', 404, () => asAnn.collection('users').getOne(bobId));
    await t.ok('auth-refresh as a user', () => asAnn.collection('users').authRefresh());
    await t.fails('a user may not use the collections API', 403, () => asAnn.collections.getList());
    await t.ok('what is there', () => notes(t.pb).getFullList({ sort: 'title' }), titles);
  },
};
