// File field scenarios: multipart uploads through the SDK (File values become FormData), the
// `field+` / `field-` / `field` modifiers, maxSize / maxSelect / mimeTypes refusals, and
// downloads from GET /api/files/... (bytes, content type, disposition, caching, ranges).
//
// Stored names end with a random `_xxxxxxxxxx` part on both engines: every name is recorded
// with that part masked, so prefixes, extensions and lengths are compared, not the names.
import { collection } from './records.mjs';

const RANDOM = /_[a-z0-9]{10}(?=\.|$|;|")/g;
const mask = (value) => {
  if (typeof value === 'string') return value.replace(RANDOM, '_<random>');
  if (Array.isArray(value)) return value.map(mask);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v)]));
  return value;
};
const shape = (rec) => ({ title: rec.title, doc: mask(rec.doc), docs: mask(rec.docs), lengths: [rec.doc, ...rec.docs].map((n) => n.length) });
const text = (body, name, type = 'text/plain') => new File([body], name, { type });
const PNG = Uint8Array.from(Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201d1c3a01f0000000049454e44ae426082', 'hex'));

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

/** Downloads `name` of `rec` (a recorded step): status, the headers PocketBase sets, bytes. */
const download = (t, label, rec, name, { query = {}, headers = {} } = {}) =>
  t.ok(label, async () => {
    const url = t.pb.files.getURL(rec, name, query);
    const response = await fetch(url, { headers });
    const bytes = Buffer.from(await response.arrayBuffer());
    const h = (key) => response.headers.get(key);
    return {
      status: response.status,
      contentType: h('content-type'),
      disposition: mask(h('content-disposition')),
      cacheControl: h('cache-control'),
      csp: h('content-security-policy'),
      lastModified: Boolean(h('last-modified')),
      contentRange: h('content-range'),
      length: bytes.length,
      hex: bytes.subarray(0, 64).toString('hex'),
    };
  });

const missing = (t, label, path) => t.raw(label, 404, path);

export default {
  async 'files-upload-download'(t) {
    await t.login();
    await collection(t, 'fl_docs', [
      { name: 'title', type: 'text' },
      { name: 'doc', type: 'file', maxSelect: 1, maxSize: 100 },
      { name: 'docs', type: 'file', maxSelect: 3, mimeTypes: ['text/plain', 'image/png'] },
    ], { listRule: '', viewRule: '' });
    const docs = t.pb.collection('fl_docs');
    const rec = await t.ok('create with one and two files', () =>
      docs.create({
        title: 'first',
        doc: text('hello world', 'My Report (final).TXT'),
        docs: [text('alpha', 'alpha.txt'), new File([PNG], 'pixel.png', { type: 'image/png' })],
      }), { pick: shape });
    if (!rec) return;
    const full = await docs.getOne(rec.id);
    await download(t, 'download the single file', full, full.doc);
    await download(t, 'download a text file with download=1', full, full.docs[0], { query: { download: 1 } });
    await download(t, 'download the png (inline)', full, full.docs[1]);
    await download(t, 'a range of the png', full, full.docs[1], { headers: { Range: 'bytes=0-7' } });
    await t.ok('view shows the names', () => docs.getOne(rec.id), { pick: shape });

    await t.ok('append a file with docs+', () => docs.update(rec.id, { 'docs+': text('gamma', 'gamma') }), { pick: shape });
    await refused(t, 'a fourth file is too many', 400, () => docs.update(rec.id, { 'docs+': text('delta', 'delta.txt') }));
    const now = await docs.getOne(rec.id);
    await download(t, 'the appended file without extension', now, now.docs[2]);
    await t.ok('remove a file with docs-', () => docs.update(rec.id, { 'docs-': [now.docs[0]] }), { pick: shape });
    await missing(t, 'the removed file is gone', `/api/files/fl_docs/${rec.id}/${now.docs[0]}`);
    await t.ok('replace the single file', () => docs.update(rec.id, { doc: text('new body', 'replacement.txt') }), { pick: shape });
    await missing(t, 'the replaced file is gone', `/api/files/fl_docs/${rec.id}/${now.doc}`);
    await t.ok('keep one named file and upload another under docs', () =>
      docs.update(rec.id, { docs: [now.docs[1]] }).then(() => docs.update(rec.id, { title: 'kept', 'docs+': [text('one', 'one.txt'), text('two', 'two.txt')] })), { pick: shape });

    await refused(t, 'a file over maxSize', 400, () => docs.update(rec.id, { doc: text('x'.repeat(200), 'big.txt') }));
    await refused(t, 'a file of another type', 400, () => docs.create({ docs: [new File([Uint8Array.from([0, 1, 2, 3, 255, 254])], 'blob.bin')] }));
    await refused(t, 'a plain name that is not a file of the record', 400, () => docs.update(rec.id, { docs: ['nope.txt'] }));
    await refused(t, 'too many files at once on create', 400, () =>
      docs.create({ docs: ['a.txt', 'b.txt', 'c.txt', 'd.txt'].map((n) => text(n, n)) }));
    await t.ok('nothing refused was stored', () => docs.getFullList({ sort: 'title' }), { pick: (list) => list.map(shape) });

    await missing(t, 'an unknown collection', `/api/files/fl_none/${rec.id}/x.txt`);
    await missing(t, 'an unknown record', '/api/files/fl_docs/missingmissing1/x.txt');
    await missing(t, 'an unknown file of the record', `/api/files/fl_docs/${rec.id}/nothere_abcdefghij.txt`);
    const last = await docs.getOne(rec.id);
    await t.ok('delete the record', () => docs.delete(rec.id));
    await missing(t, 'a deleted record\'s file', `/api/files/fl_docs/${rec.id}/${last.docs[0]}`);
  },
};
