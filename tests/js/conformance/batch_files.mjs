// Batch API scenarios with files: pb.createBatch() with File values (the SDK sends them as
// `requests.N.KEY` parts next to `@jsonPayload`), their modifiers, downloads of what a batch
// stored, and failing batches that must store and remove nothing.
//
// In a batch PocketBase sanitises an uploaded name twice (each request is rebuilt as a
// multipart form of its own), so stored names carry two random parts: both are masked.
import { enableBatch } from './batch.mjs';
import { collection } from './records.mjs';

const RANDOM = /_[a-z0-9]{10}(?=[._]|$|;|")/g;
const mask = (value) => {
  if (typeof value === 'string') return value.replace(RANDOM, '_<random>');
  if (Array.isArray(value)) return value.map(mask);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v)]));
  return value;
};
const text = (body, name) => new File([body], name, { type: 'text/plain' });
const PNG = Uint8Array.from(Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201d1c3a01f0000000049454e44ae426082', 'hex'));
const shape = (rec) => ({ title: rec.title, doc: mask(rec.doc), docs: mask(rec.docs) });
const results = (list) => list.map((r) => ({ status: r.status, body: r.body && shape(r.body) }));

/** A step expected to fail whose error response has its random names masked. */
const refused = (t, label, status, request) =>
  t.fails(label, status, async () => {
    try {
      return await request();
    } catch (err) {
      err.response = mask(err.response);
      throw err;
    }
  });

/** The bytes, type and disposition of every file of `rec` (a recorded step). */
const downloads = (t, label, rec) =>
  t.ok(label, async () => {
    const out = [];
    for (const name of [rec.doc, ...rec.docs].filter(Boolean)) {
      const response = await fetch(t.pb.files.getURL(rec, name));
      out.push({
        status: response.status,
        contentType: response.headers.get('content-type'),
        disposition: mask(response.headers.get('content-disposition')),
        hex: Buffer.from(await response.arrayBuffer()).toString('hex'),
      });
    }
    return out;
  });

const fields = [
  { name: 'title', type: 'text' },
  { name: 'doc', type: 'file', maxSelect: 1, maxSize: 100 },
  { name: 'docs', type: 'file', maxSelect: 3, mimeTypes: ['text/plain', 'image/png'] },
];

export default {
  async 'batch-files-upload'(t) {
    await t.login();
    await enableBatch(t);
    await collection(t, 'bfu_docs', fields, { listRule: '', viewRule: '' });
    const created = await t.ok('create records with files in one batch', () => {
      const batch = t.pb.createBatch();
      batch.collection('bfu_docs').create({ title: 'one', doc: text('hello world', 'hello.txt') });
      const form = new FormData();
      form.append('title', 'two');
      form.append('docs', text('alpha', 'alpha.txt'));
      form.append('docs', new File([PNG], 'pixel.png', { type: 'image/png' }));
      batch.collection('bfu_docs').create(form);
      batch.collection('bfu_docs').create({ title: 'three' });
      return batch.send();
    }, { pick: results });
    if (!created) return;
    const [one, two, three] = created.map((r) => r.body);
    await downloads(t, 'download what the batch stored', one);
    await downloads(t, 'download the two files of the second record', two);

    await t.ok('append, prepend, remove and replace files in one batch', () => {
      const batch = t.pb.createBatch();
      batch.collection('bfu_docs').update(two.id, { 'docs+': text('gamma', 'gamma.txt') });
      batch.collection('bfu_docs').update(two.id, { '+docs': text('zero', 'zero.txt'), 'docs-': [two.docs[0]] });
      batch.collection('bfu_docs').update(one.id, { doc: text('new body', 'replacement.txt') });
      batch.collection('bfu_docs').upsert({ id: three.id, title: 'three again', docs: [text('up', 'upserted.txt')] });
      return batch.send();
    }, { pick: results });
    await t.raw('the replaced file is gone', 404, `/api/files/bfu_docs/${one.id}/${one.doc}`);
    await t.raw('the removed file is gone', 404, `/api/files/bfu_docs/${two.id}/${two.docs[0]}`);
    const after = await t.ok('the records after the batches', () => t.pb.collection('bfu_docs').getFullList({ sort: 'title' }), {
      pick: (list) => list.map(shape),
    });
    for (const rec of after ?? []) await downloads(t, `download the files of ${rec.title}`, rec);
    await t.ok('delete a record with files in a batch', () => {
      const batch = t.pb.createBatch();
      batch.collection('bfu_docs').delete(one.id);
      return batch.send();
    });
    await t.raw('the deleted record\'s file is gone', 404, `/api/files/bfu_docs/${one.id}/${after[0].doc}`);
  },

  async 'batch-files-rollback'(t) {
    await t.login();
    await enableBatch(t);
    await collection(t, 'bfr_docs', fields, { listRule: '', viewRule: '' });
    const kept = await t.ok('a record with a file', () =>
      t.pb.collection('bfr_docs').create({ title: 'kept', doc: text('old', 'old.txt'), docs: [text('a', 'first.txt')] }), { pick: shape });
    if (!kept) return;
    const full = await t.pb.collection('bfr_docs').getOne(kept.id);
    await refused(t, 'a file over maxSize fails the batch', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bfr_docs').create({ title: 'rolled back', docs: [text('new', 'new.txt')] });
      batch.collection('bfr_docs').update(full.id, { doc: text('replacement', 'replacement.txt'), 'docs-': full.docs });
      batch.collection('bfr_docs').create({ title: 'too big', doc: text('x'.repeat(200), 'big.txt') });
      return batch.send();
    });
    await refused(t, 'a file of another type fails the batch', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bfr_docs').create({ title: 'rolled back 2', doc: text('fine', 'fine.txt') });
      batch.collection('bfr_docs').create({ docs: [new File([Uint8Array.from([0, 1, 2, 255])], 'blob.bin')] });
      return batch.send();
    });
    await refused(t, 'too many files fail the batch', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bfr_docs').create({ docs: ['w.txt', 'x.txt', 'y.txt', 'z.txt'].map((n) => text(n, n)) });
      return batch.send();
    });
    await refused(t, 'an unknown collection after an upload fails the batch', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bfr_docs').update(full.id, { doc: text('another', 'another.txt') });
      batch.collection('bfr_none').create({ title: 'nope' });
      return batch.send();
    });
    await refused(t, 'a failing request after a delete fails the batch', 400, () => {
      const batch = t.pb.createBatch();
      batch.collection('bfr_docs').delete(full.id);
      batch.collection('bfr_docs').update('missingmissing1', { doc: text('none', 'none.txt') });
      return batch.send();
    });
    await t.ok('nothing of the failed batches is there', () => t.pb.collection('bfr_docs').getFullList({ sort: 'title' }), {
      pick: (list) => list.map(shape),
    });
    await downloads(t, 'the old files are still served', full);
  },
};
