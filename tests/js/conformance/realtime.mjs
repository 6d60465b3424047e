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
