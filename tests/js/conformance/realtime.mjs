// Realtime scenarios (/api/realtime over SSE) through the SDK's RealtimeService: rules evaluated
// per subscriber (a client never learns of a record its listRule/viewRule hides), expand and
// fields per topic, unsubscribe, and PocketBase's refusals of POST /api/realtime.
//
// Events are collected for a fixed short time after the writes and compared as sorted lists
// (PocketBase sends each message from its own goroutine: their order is not part of the API).
import { collection } from './records.mjs';

const SETTLE_MS = 1200;
const settle = () => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
const ACTIONS = { create: 0, update: 1, delete: 2 };

/** Sorted copy of events `{action, record}`, by action then title (ids differ by engine). */
const sorted = (events) =>
  [...events].sort((a, b) => {
    const ka = `${ACTIONS[a.action] ?? 9}:${a.record?.title}:${JSON.stringify(a.record?.expand ?? null)}`;
    const kb = `${ACTIONS[b.action] ?? 9}:${b.record?.title}:${JSON.stringify(b.record?.expand ?? null)}`;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });

/** Subscribes `client` to `topic` of `coll` (a recorded step); returns {events, unsubscribe}. */
async function listen(t, client, label, coll, topic, options) {
  const events = [];
  const unsubscribe = await t.ok(
    `subscribe ${label}`,
    () => client.collection(coll).subscribe(topic, (e) => events.push(e), options),
    { pick: (fn) => typeof fn },
  );
  return { events, unsubscribe };
}

async function user(t, coll, email) {
  await t.ok(`create user ${email}`, () =>
    t.pb.collection(coll).create({ email, password: 'realtime-pass-1', passwordConfirm: 'realtime-pass-1' }),
  );
  const client = t.client();
  await t.ok(`login ${email}`, () => client.collection(coll).authWithPassword(email, 'realtime-pass-1'), {
    pick: (r) => r.record.email,
  });
  return client;
}

export default {
  async 'realtime-rules-expand-fields'(t) {
    await t.login();
    const users = await collection(t, 'rt_users', [], { type: 'auth', listRule: '', viewRule: '' });
    const tags = await collection(t, 'rt_tags', [{ name: 'name', type: 'text' }], { listRule: '', viewRule: '' });
    await collection(
      t,
      'rt_notes',
      [
        { name: 'title', type: 'text' },
        { name: 'secret', type: 'text', hidden: true },
        { name: 'owner', type: 'relation', collectionId: users.id, maxSelect: 1 },
        { name: 'tag', type: 'relation', collectionId: tags.id, maxSelect: 1 },
      ],
      { listRule: 'owner = @request.auth.id', viewRule: 'owner = @request.auth.id || title = "public"' },
    );
    const alice = await user(t, 'rt_users', 'alice@example.com');
    const bob = await user(t, 'rt_users', 'bob@example.com');
    const guest = t.client();
    const aliceId = alice.authStore.record.id;
    const bobId = bob.authStore.record.id;
    const tag = await t.ok('create a tag', () => t.pb.collection('rt_tags').create({ name: 'red' }));
    const kept = await t.ok('create a note for the id topics', () =>
      t.pb.collection('rt_notes').create({ title: 'kept', owner: bobId, tag: tag.id }),
    );

    const subs = {
      aliceAll: await listen(t, alice, 'alice COLL/*', 'rt_notes', '*'),
      alicePicked: await listen(t, alice, 'alice COLL/* with expand and fields', 'rt_notes', '*', {
        expand: 'tag,owner',
        fields: 'title,owner,expand.tag.name,expand.owner.email',
      }),
      aliceFiltered: await listen(t, alice, 'alice COLL/* with a filter', 'rt_notes', '*', {
        filter: 'title ~ "a"',
      }),
      aliceOne: await listen(t, alice, 'alice COLL/ID of bob', 'rt_notes', kept.id),
      bobAll: await listen(t, bob, 'bob COLL/*', 'rt_notes', '*'),
      guestAll: await listen(t, guest, 'guest COLL/*', 'rt_notes', '*'),
      guestOne: await listen(t, guest, 'guest COLL/ID', 'rt_notes', kept.id),
      superAll: await listen(t, t.pb, 'superuser COLL/*', 'rt_notes', '*', { expand: 'tag' }),
    };
    t.check('the SDK is connected', alice.realtime.isConnected && guest.realtime.isConnected);

    const notes = t.pb.collection('rt_notes');
    const mine = await t.ok('create alice note', () =>
      notes.create({ title: 'alpha', secret: 's1', owner: aliceId, tag: tag.id }),
    );
    const theirs = await t.ok('create bob note', () => notes.create({ title: 'beta', secret: 's2', owner: bobId }));
    await t.ok('update alice note', () => notes.update(mine.id, { title: 'gamma' }));
    await t.ok('update bob note', () => notes.update(theirs.id, { title: 'delta' }));
    await t.ok('make the kept note public', () => notes.update(kept.id, { title: 'public' }));
    await t.ok('update the kept note again', () => notes.update(kept.id, { title: 'kept' }));
    await t.ok('delete alice note', () => notes.delete(mine.id));
    await t.ok('delete bob note', () => notes.delete(theirs.id));
    await settle();
    for (const [name, sub] of Object.entries(subs)) t.note(`events of ${name}`, sorted(sub.events));

    // unsubscribe one topic: the others keep receiving
    for (const sub of Object.values(subs)) sub.events.length = 0;
    await t.ok('alice unsubscribes from the plain topic', () => subs.aliceAll.unsubscribe(), { pick: () => null });
    await t.ok('create another alice note', () => notes.create({ title: 'epsilon', owner: aliceId }));
    await settle();
    t.note('after unsubscribe: the plain topic', sorted(subs.aliceAll.events));
    t.note('after unsubscribe: the picked topic', sorted(subs.alicePicked.events));

    await t.ok('alice unsubscribes from everything', () => alice.realtime.unsubscribe(), { pick: () => null });
    t.check('the SDK disconnected', alice.realtime.isConnected === false);
    await t.ok('create a last alice note', () => notes.create({ title: 'zeta', owner: aliceId }));
    await settle();
    t.note('after unsubscribing from everything', sorted(subs.alicePicked.events).length);
    for (const client of [bob, guest, t.pb]) await client.realtime.unsubscribe();
  },

  async 'realtime-cascade-delete'(t) {
    // A delete that cascades: every cascaded record gets its own `delete` event, judged by its
    // rules as they held before the transaction (the comments' rule goes through the deleted
    // post), unlinked references get an `update`, and a cascaded auth record's client loses its
    // auth (its later events stop) — the ordering inside one transaction included.
    await t.login();
    const users = await collection(t, 'rtc_users', [], { type: 'auth', listRule: '', viewRule: '' });
    const posts = await collection(
      t,
      'rtc_posts',
      [
        { name: 'title', type: 'text' },
        { name: 'owner', type: 'relation', collectionId: users.id, maxSelect: 1 },
      ],
      { listRule: 'owner = @request.auth.id', viewRule: 'owner = @request.auth.id' },
    );
    const comments = await collection(
      t,
      'rtc_comments',
      [
        { name: 'title', type: 'text' },
        { name: 'post', type: 'relation', collectionId: posts.id, maxSelect: 1, cascadeDelete: true },
      ],
      { listRule: 'post.owner = @request.auth.id', viewRule: 'post.owner = @request.auth.id' },
    );
    await t.ok('add a reply relation to the comments', () =>
      t.pb.collections.update(comments.id, {
        fields: [
          ...comments.fields,
          { name: 'parent', type: 'relation', collectionId: comments.id, maxSelect: 1, cascadeDelete: true },
        ],
      }), { pick: (c) => c.fields.map((f) => f.name) });
    await collection(
      t,
      'rtc_links',
      [
        { name: 'title', type: 'text' },
        { name: 'posts', type: 'relation', collectionId: posts.id, maxSelect: 5 },
      ],
      { listRule: '@request.auth.id != ""', viewRule: '@request.auth.id != ""' },
    );
    await collection(
      t,
      'rtc_members',
      [{ name: 'post', type: 'relation', collectionId: posts.id, maxSelect: 1, cascadeDelete: true }],
      { type: 'auth', listRule: '', viewRule: '' },
    );
    const alice = await user(t, 'rtc_users', 'alice@example.com');
    const bob = await user(t, 'rtc_users', 'bob@example.com');
    const guest = t.client();
    const aliceId = alice.authStore.record.id;

    const post = await t.ok('create the post', () =>
      t.pb.collection('rtc_posts').create({ title: 'doomed', owner: aliceId }));
    const other = await t.ok('create another post', () =>
      t.pb.collection('rtc_posts').create({ title: 'other', owner: aliceId }));
    const c1 = await t.ok('create comment one', () =>
      t.pb.collection('rtc_comments').create({ title: 'one', post: post.id }));
    await t.ok('create comment two', () => t.pb.collection('rtc_comments').create({ title: 'two', post: post.id }));
    await t.ok('create a reply without a post', () =>
      t.pb.collection('rtc_comments').create({ title: 'reply', parent: c1.id }));
    await t.ok('create a comment elsewhere', () =>
      t.pb.collection('rtc_comments').create({ title: 'kept', post: other.id }));
    const link = await t.ok('create a link to both posts', () =>
      t.pb.collection('rtc_links').create({ title: 'link', posts: [post.id, other.id] }));
    await t.ok('create a member of the post', () =>
      t.pb.collection('rtc_members').create({
        email: 'member@example.com', password: 'realtime-pass-1', passwordConfirm: 'realtime-pass-1', post: post.id,
      }));
    const member = t.client();
    await t.ok('login the member', () =>
      member.collection('rtc_members').authWithPassword('member@example.com', 'realtime-pass-1'), {
      pick: (r) => r.record.email,
    });

    const subs = {};
    for (const [who, client] of Object.entries({ alice, bob, guest, member, superuser: t.pb })) {
      for (const coll of ['rtc_posts', 'rtc_comments', 'rtc_links', 'rtc_members']) {
        subs[`${who} ${coll}`] = await listen(t, client, `${who} ${coll}/*`, coll, '*');
      }
    }
    subs['superuser comments with expand'] = await listen(
      t, t.pb, 'superuser rtc_comments/* with expand', 'rtc_comments', '*', { expand: 'post,parent' });

    await t.ok('delete the post', () => t.pb.collection('rtc_posts').delete(post.id));
    await settle();
    for (const [name, sub] of Object.entries(subs)) t.note(`events of ${name}`, sorted(sub.events));
    t.check('the unlinked link keeps the other post',
      subs['alice rtc_links'].events.some((e) => e.action === 'update' && e.record.posts.join() === other.id));
    await t.ok('what is left of the comments', () =>
      t.pb.collection('rtc_comments').getFullList({ sort: 'title' }), { pick: (items) => items.map((i) => i.title) });

    // the member's record is gone: its client is a guest now, the others keep their auth
    for (const sub of Object.values(subs)) sub.events.length = 0;
    await t.ok('update the link again', () => t.pb.collection('rtc_links').update(link.id, { title: 'link again' }));
    await settle();
    t.note('after the cascade: the member', sorted(subs['member rtc_links'].events));
    t.note('after the cascade: alice', sorted(subs['alice rtc_links'].events));
    for (const client of [alice, bob, guest, member, t.pb]) await client.realtime.unsubscribe();
  },

  async 'realtime-auth-resets'(t) {
    // A client keeps its stream but loses its auth when its collection's token secret changes
    // or its collection is deleted: its topics are then judged as a guest's.
    await t.login();
    const members = await collection(t, 'rta_members', [], { type: 'auth' });
    await collection(t, 'rta_guests', [], { type: 'auth' });
    await collection(t, 'rta_notes', [{ name: 'title', type: 'text' }], {
      listRule: '@request.auth.id != ""',
      viewRule: '@request.auth.id != ""',
    });
    const alice = await user(t, 'rta_members', 'alice@example.com');
    const bob = await user(t, 'rta_guests', 'bob@example.com');
    const subs = {
      alice: await listen(t, alice, 'alice rta_notes/*', 'rta_notes', '*'),
      bob: await listen(t, bob, 'bob rta_notes/*', 'rta_notes', '*'),
      superuser: await listen(t, t.pb, 'superuser rta_notes/*', 'rta_notes', '*'),
    };
    const notes = t.pb.collection('rta_notes');
    await t.ok('create a first note', () => notes.create({ title: 'first' }));
    await settle();
    for (const [name, sub] of Object.entries(subs)) t.note(`before: ${name}`, sorted(sub.events));

    for (const sub of Object.values(subs)) sub.events.length = 0;
    await t.ok('invalidate the members tokens', () =>
      t.pb.collections.update(members.id, { authToken: { secret: 'x'.repeat(50) } }), { pick: () => null });
    await t.fails('the old member token is refused', 401, () => alice.collection('rta_members').authRefresh());
    await t.ok('create a second note', () => notes.create({ title: 'second' }));
    await settle();
    for (const [name, sub] of Object.entries(subs)) t.note(`after the new secret: ${name}`, sorted(sub.events));

    for (const sub of Object.values(subs)) sub.events.length = 0;
    await t.ok('delete the guests collection', () => t.pb.collections.delete('rta_guests'));
    await t.ok('create a third note', () => notes.create({ title: 'third' }));
    await settle();
    for (const [name, sub] of Object.entries(subs)) t.note(`after the deletion: ${name}`, sorted(sub.events));
    for (const client of [alice, bob, t.pb]) await client.realtime.unsubscribe();
  },

  async 'realtime-subscription-refusals'(t) {
    const anon = t.client();
    await t.raw('POST without a client id', 400, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ subscriptions: [] }),
    }, { auth: false });
    await t.raw('POST with an unknown client id', 404, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientId: 'nope', subscriptions: [] }),
    }, { auth: false });
    await t.raw('POST with too long a topic', 400, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientId: 'nope', subscriptions: ['ok', 'x'.repeat(2501)] }),
    }, { auth: false });
    await t.raw('POST with a client id of the wrong type', 400, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientId: 5 }),
    }, { auth: false });

    await t.login();
    const su = t.client();
    await t.ok('a second superuser client', () =>
      su.collection('_superusers').authWithPassword(t.email, t.password), { pick: () => null });
    await su.realtime.subscribe('rt_nothing/*', () => {});
    const clientId = su.realtime.clientId;
    t.check('the client id is 40 characters', typeof clientId === 'string' && clientId.length === 40);
    await t.raw('the same client as a guest', 403, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientId, subscriptions: ['rt_nothing/*'] }),
    }, { auth: false });
    await t.raw('the same client with the same auth', 204, '/api/realtime', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientId, subscriptions: ['rt_nothing/*'] }),
    });
    await su.realtime.unsubscribe();
    await anon.realtime.unsubscribe();
  },
};
