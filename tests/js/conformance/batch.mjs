// Batch API scenarios (POST /api/batch through pb.createBatch()): transactional, all or nothing.
import { collection, seed } from './records.mjs';
import { pluck } from './trace.mjs';

/** Batch requests are off in a fresh PocketBase: turn them on (recording only `batch`). */
export const enableBatch = (t, maxRequests = 50) =>
  t.ok(
    `enable batch requests (maxRequests ${maxRequests})`,
    () => t.pb.settings.update({ batch: { enabled: true, maxRequests, timeout: 3, maxBodySize: 0 } }),
    { pick: (settings) => settings.batch },
  );

const titles = (t, name, label) =>
  t.ok(label, () => t.pb.collection(name).getFullList({ sort: 'title' }), {
    pick: (list) => pluck(list, 'title'),
  });

export default {
  async 'batch-disabled-by-default'(t) {
    await t.login();
    await collection(t, 'bd_items', [{ name: 'title', type: 'text' }]);
    const send = () => {
      const batch = t.pb.createBatch();
      batch.collection('bd_items').create({ title: 'one' });
      return batch.send();
    };
    await t.ok('batch settings of a fresh instance', () => t.pb.settings.getAll(), { pick: (s) => s.batch });
    await t.fails('a batch while batch requests are off', 403, send);
    await enableBatch(t);
    await t.ok('the same batch once they are on', send);
    await titles(t, 'bd_items', 'items after the batch');
  },

  async 'batch-transactional'(t) {
    await t.login();
    await enableBatch(t);
    const people = await collection(t, 'bt_people', [{ name: 'name', type: 'text', required: true }]);
    await collection(t, 'bt_items', [
      { name: 'title', type: 'text', required: true },
      { name: 'n', type: 'number' },
      { name: 'owner', type: 'relation', collectionId: people.id, maxSelect: 1 },
    ]);
    const [keep, drop] = await seed(t, 'bt_items', [
      { title: 'keep', n: 1 },
      { title: 'drop', n: 2 },
    ]);
    t.keep('btpeople0000001');
    await t.ok('create, update, delete and upsert in one batch', () => {
      const batch = t.pb.createBatch();
      batch.collection('bt_people').create({ id: 'btpeople0000001', name: 'Ann' });
      batch.collection('bt_items').create({ title: 'new', owner: 'btpeople0000001' });
      batch.collection('bt_items').update(keep.id, { 'n+': 10 });
      batch.collection('bt_items').delete(drop.id);
      batch.collection('bt_items').upsert({ id: keep.id, title: 'kept' });
      batch.collection('bt_items').upsert({ title: 'upserted' });
      return batch.send();
    });
    await titles(t, 'bt_items', 'items after the batch');
    await t.fails('a failing create rolls back the others', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bt_items').create({ title: 'rolled back' });
      batch.collection('bt_people').create({ name: '' });
      batch.collection('bt_items').delete(keep.id);
      return batch.send();
    });
    await t.fails('an update of an unknown record rolls back the others', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bt_items').create({ title: 'rolled back too' });
      batch.collection('bt_items').update('missingmissing1', { n: 1 });
      return batch.send();
    });
    await t.fails('an operation on an unknown collection', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bt_items').create({ title: 'nope' });
      batch.collection('bt_none').create({ title: 'nope' });
      return batch.send();
    });
    await titles(t, 'bt_items', 'nothing of the failed batches is there');
    await t.ok('the batch person', () => t.pb.collection('bt_people').getFullList());
    await t.fails('an empty batch', 400, () => t.pb.createBatch().send());
    await t.fails('anonymous batch against a superusers-only collection', 400, () => {
      const batch = t.anon.createBatch();
      batch.collection('bt_items').create({ title: 'anon' });
      return batch.send();
    });
  },

  async 'batch-limits'(t) {
    await t.login();
    await collection(t, 'bl_items', [{ name: 'title', type: 'text' }]);
    await enableBatch(t, 3);
    const send = (count) => {
      const batch = t.pb.createBatch();
      for (let i = 0; i < count; i += 1) batch.collection('bl_items').create({ title: `t${count}-${i}` });
      return batch.send();
    };
    await t.ok('3 requests (the maximum)', () => send(3));
    await t.fails('4 requests', 400, () => send(4));
    await enableBatch(t, 50);
    await titles(t, 'bl_items', 'items');
    await t.raw('a batch that is not JSON', 400, '/api/batch', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"requests": [',
    });
    await t.raw('a request with an unsupported method or URL', 400, '/api/batch', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ requests: [{ method: 'GET', url: '/api/collections/bl_items/records' }] }),
    });
  },
};
