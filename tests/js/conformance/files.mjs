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

// --- thumbnails and protected files ------------------------------------------------------------
// 150x100 images (top half red, bottom half blue) made with Pillow, and an 8x4 BMP.
const IMAGES = {
  png: ['image/png', 'iVBORw0KGgoAAAANSUhEUgAAAJYAAABkCAIAAADrOV6nAAABCElEQVR4nO3TQQkAMRAEwcs917+oyIqIPEJDlYKBZtae+Sj7Xw/gloR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdh3prZrzdwxQvzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzDk/mAn/zhHtwAAAAAElFTkSuQmCC'],
  jpg: ['image/jpeg', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABsSFBcUERsXFhceHBsgKEIrKCUlKFE6PTBCYFVlZF9VXVtqeJmBanGQc1tdhbWGkJ6jq62rZ4C8ybqmx5moq6T/2wBDARweHigjKE4rK06kbl1upKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKT/wAARCABkAJYDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDNooormPbCiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAr+Y/r+lHmP6/pTaK+g9jT/AJV9x4ntan8z+8d5j+v6UeY/r+lNoo9jT/lX3B7Wp/M/vHeY/r+lHmP6/pTaKPY0/wCVfcHtan8z+8d5j+v6UeY/r+lNoo9jT/lX3B7Wp/M/vHeY/r+lHmP6/pTaKPY0/wCVfcHtan8z+8d5j+v6UeY/r+lNoo9jT/lX3B7Wp/M/vHeY/r+lHmP6/pTaKPY0/wCVfcHtan8z+8d5j+v6UeY/r+lNoo9jT/lX3B7Wp/M/vHeY/r+lHmP6/pTaKPY0/wCVfcHtan8z+8d5j+v6UU2ij2NP+VfcHtan8z+8KKKK0MwooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKACiiigAooooAKKKKAP/Z'],
  gif: ['image/gif', 'R0lGODdhlgBkAIEAAMgKCgoKyAAAAAAAACwAAAAAlgBkAEAI/wABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatzIsaPHjyBDihxJsqTJkyhTqlzJsuXDADBjypxJs6bNmzhz6tzJs6fPn0CDCh1KtKjRo0iTKl3KtKnTp1CjSp1KtarVq1Vdat3KtavXr2DDih1LtqzZs2hZYl3Ltq3bt3Djyp1Lt67du3jz6pWbtq/fv4ADCx5MuLDhw4gTK17MuLHjx5AjS55Mcq/ly5gza97MubPnz6BDix5NurTp06hTq17NurXr1zQpy55Nu7bt27hz697Nu7fv38CDCx9OvLjx48iTK1/OvLnz59CjS59OHSPs69iza9/Ovbv37+DDix0fT768+fPo06tfz769+/fw48ufT7++/fv48xsNCAA7'],
  webp: ['image/webp', 'UklGRroAAABXRUJQVlA4IK4AAADQCgCdASqWAGQAPm02l0ikIyIhJRLoAIANiWdu4W/Q/Z0HyATAD+AYQB/APb/uwD9AAA6eJ1xasW2SoKnNrt6K+x+fwHoD8fj8fj8fj8flsdbVomGiMza7eiwFgLAVYAD+/PiX//AcS6+lB//7nA+mn7LP66EkRnkANLzA2kVJ0//+hYaLOC9JPVaJ/8Cf8df4ohA7mnJRo4QQWeNX/QxIkSJEzvnd69MPFAAAAAA='],
  bmp: ['image/bmp', 'Qk2WAAAAAAAAADYAAAAoAAAACAAAAAQAAAABABgAAAAAAGAAAADEDgAAxA4AAAAAAAAAAAAAywoHywoHywoHywoHywoHywoHywoHywoHuQoZuQoZuQoZuQoZuQoZuQoZuQoZuQoZGQq5GQq5GQq5GQq5GQq5GQq5GQq5GQq5BwrLBwrLBwrLBwrLBwrLBwrLBwrLBwrL'],
};
const image = (ext, name = `picture.${ext}`) => new File([Buffer.from(IMAGES[ext][1], 'base64')], name, { type: IMAGES[ext][0] });
const THUMBS = ['50x50', '50x20t', '50x20b', '0x50', '50x0', '400x400f', '50x50f'];

/** An image's [width, height] read from its header (png, gif, jpeg, lossy webp, bmp), else null. */
export const imageSize = (b) => {
  const tag = (from, to) => b.subarray(from, to).toString('latin1');
  if (b.length >= 24 && tag(1, 4) === 'PNG') return [b.readUInt32BE(16), b.readUInt32BE(20)];
  if (b.length >= 10 && tag(0, 3) === 'GIF') return [b.readUInt16LE(6), b.readUInt16LE(8)];
  if (b.length >= 26 && tag(0, 2) === 'BM') return [b.readInt32LE(18), Math.abs(b.readInt32LE(22))];
  if (b.length >= 30 && tag(0, 4) === 'RIFF' && tag(8, 16) === 'WEBPVP8 ') return [b.readUInt16LE(26) & 0x3fff, b.readUInt16LE(28) & 0x3fff];
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    for (let i = 2; i + 9 < b.length; ) {
      if (b[i] !== 0xff) return null;
      const marker = b[i + 1];
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [b.readUInt16BE(i + 7), b.readUInt16BE(i + 5)];
      i += 2 + b.readUInt16BE(i + 2);
    }
  }
  return null;
};

/** GETs a file URL (a recorded step, a surprise unless 200): status, type, disposition (names
 * masked), image size (thumbs are compared by size, not bytes). */
const fetchImage = (t, label, url) =>
  t.ok(label, async () => {
    const response = await fetch(url);
    const bytes = Buffer.from(await response.arrayBuffer());
    if (response.status !== 200) t.surprises.push({ step: label, expected: 200, got: response.status });
    return {
      status: response.status,
      contentType: response.headers.get('content-type'),
      disposition: mask(response.headers.get('content-disposition')),
      size: imageSize(bytes),
      length: response.headers.get('content-type')?.startsWith('image/') ? undefined : bytes.length,
    };
  });

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
  async 'files-thumbs'(t) {
    await t.login();
    await collection(t, 'fl_pics', [
      { name: 'pics', type: 'file', maxSelect: 9, thumbs: THUMBS },
      { name: 'one', type: 'file', maxSelect: 1 },
    ], { listRule: '', viewRule: '' });
    const pics = t.pb.collection('fl_pics');
    const rec = await t.ok('upload every kind of image and a text', () =>
      pics.create({ pics: [...Object.keys(IMAGES).map((ext) => image(ext)), text('not an image', 'notes.txt')], one: image('png', 'single.png') }),
      { pick: (r) => mask(r.pics) });
    if (!rec) return;
    for (const [i, name] of rec.pics.entries()) {
      for (const thumb of ['', '100x100', ...THUMBS, '70x70', '0x0', 'nonsense']) {
        await fetchImage(t, `file ${i} thumb=${thumb}`, t.pb.files.getURL(rec, name, thumb ? { thumb } : {}));
      }
    }
    await fetchImage(t, 'a thumb again (from the storage)', t.pb.files.getURL(rec, rec.pics[0], { thumb: '50x20t' }));
    await fetchImage(t, 'a thumb with download=1', t.pb.files.getURL(rec, rec.pics[1], { thumb: '50x50', download: 1 }));
    await fetchImage(t, 'the single file\'s default thumb', t.pb.files.getURL(rec, rec.one, { thumb: '100x100' }));
    const replaced = await t.ok('replace the single file', () => pics.update(rec.id, { one: image('gif', 'other.gif') }), { pick: (r) => mask(r.one) });
    await missing(t, 'the replaced file\'s thumb is gone', `/api/files/fl_pics/${rec.id}/${rec.one}?thumb=100x100`);
    if (replaced) await fetchImage(t, 'the new file\'s thumb', t.pb.files.getURL(replaced, replaced.one, { thumb: '100x100' }));
    await t.ok('delete the record', () => pics.delete(rec.id));
    await missing(t, 'a deleted record\'s thumb', `/api/files/fl_pics/${rec.id}/${rec.pics[0]}?thumb=50x50`);
  },

  async 'files-protected-token'(t) {
    await t.login();
    const members = await t.ok('create an auth collection', () =>
      t.pb.collections.create({ name: 'fl_members', type: 'auth', fileToken: { duration: 120 } }), { pick: (c) => c.fileToken?.duration });
    if (!members) return;
    const password = 'member-pass-123';
    const users = {};
    for (const name of ['alice', 'bob']) {
      users[name] = await t.ok(`create member ${name}`, () =>
        t.pb.collection('fl_members').create({ email: `${name}@example.com`, password, passwordConfirm: password }), { pick: (r) => r.email });
    }
    await collection(t, 'fl_secrets', [
      { name: 'owner', type: 'relation', collectionId: members.id, maxSelect: 1 },
      { name: 'secret', type: 'file', protected: true, maxSelect: 1, thumbs: ['40x40'] },
      { name: 'open', type: 'file', maxSelect: 1 },
    ], { listRule: '', viewRule: '@request.auth.id = owner' });
    await collection(t, 'fl_ctx', [{ name: 'secret', type: 'file', protected: true, maxSelect: 1 }],
      { viewRule: "@request.context = 'protectedFile'" });
    await collection(t, 'fl_locked', [{ name: 'secret', type: 'file', protected: true, maxSelect: 1 }]);
    const rec = await t.ok('a record with a protected file', () =>
      t.pb.collection('fl_secrets').create({ owner: users.alice?.id, secret: image('png', 'secret.png'), open: text('open', 'open.txt') }),
      { pick: (r) => mask([r.secret, r.open]) });
    const ctx = await t.ok('a record whose rule asks for the file context', () => t.pb.collection('fl_ctx').create({ secret: text('ctx', 'ctx.txt') }), { pick: (r) => mask(r.secret) });
    const locked = await t.ok('a record of a superusers-only collection', () => t.pb.collection('fl_locked').create({ secret: text('locked', 'locked.txt') }), { pick: (r) => mask(r.secret) });
    if (!rec || !ctx || !locked) return;

    const alice = t.client();
    const bob = t.client();
    await t.ok('alice logs in', () => alice.collection('fl_members').authWithPassword('alice@example.com', password), { pick: (r) => r.record.email });
    await t.ok('bob logs in', () => bob.collection('fl_members').authWithPassword('bob@example.com', password), { pick: (r) => r.record.email });
    await t.fails('a guest gets no file token', 401, () => t.anon.files.getToken());
    const aliceToken = await t.ok('alice gets a file token', () => alice.files.getToken(), { pick: (v) => typeof v });
    const bobToken = await t.ok('bob gets a file token', () => bob.files.getToken(), { pick: (v) => typeof v });
    const suToken = await t.ok('the superuser gets a file token', () => t.pb.files.getToken(), { pick: (v) => typeof v });
    const claims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    if (aliceToken) {
      const c = claims(aliceToken);
      t.note('alice\'s file token claims', { type: c.type, collection: c.collectionId === members.id, id: c.id === users.alice?.id, lifetime: Math.round((c.exp - Date.now() / 1000) / 10) * 10 });
    }
    if (suToken) t.note('the superuser\'s token lifetime', Math.round((claims(suToken).exp - Date.now() / 1000) / 10) * 10);

    const url = (record, token, query = {}) => t.pb.files.getURL(record, record.secret, token ? { token, ...query } : query);
    await missing(t, 'the protected file without a token', `/api/files/fl_secrets/${rec.id}/${rec.secret}`);
    await t.raw('the protected file with the superuser\'s header but no token', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}`);
    await t.raw('the protected file with alice\'s auth token as the token', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}?token=${alice.authStore.token}`);
    await t.raw('the protected file with a bad token', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}?token=nonsense`);
    await fetchImage(t, 'the protected file with alice\'s token', url(rec, aliceToken));
    await fetchImage(t, 'a thumb of the protected file with alice\'s token', url(rec, aliceToken, { thumb: '40x40' }));
    await fetchImage(t, 'the default thumb of the protected file with a token', url(rec, aliceToken, { thumb: '100x100' }));
    await t.raw('the protected file with bob\'s token', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}?token=${bobToken}`);
    await fetchImage(t, 'the protected file with the superuser\'s token', url(rec, suToken));
    await t.raw('a thumb of the protected file without a token', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}?thumb=40x40`, {}, { auth: false });
    await fetchImage(t, 'the open file without a token', t.pb.files.getURL(rec, rec.open));
    await fetchImage(t, 'a guest in the protected-file context', t.pb.files.getURL(ctx, ctx.secret));
    await t.raw('alice on a superusers-only collection', 404, `/api/files/fl_locked/${locked.id}/${locked.secret}?token=${aliceToken}`);
    await fetchImage(t, 'the superuser on a superusers-only collection', url(locked, suToken));
    await t.ok('bob\'s password changes', () => t.pb.collection('fl_members').update(users.bob.id, { password: 'another-pass-1', passwordConfirm: 'another-pass-1' }), { pick: (r) => r.email });
    await t.ok('bob owns the record now', () => t.pb.collection('fl_secrets').update(rec.id, { owner: users.bob.id }), { pick: (r) => r.owner === users.bob.id });
    await t.raw('bob\'s old token after the change', 404, `/api/files/fl_secrets/${rec.id}/${rec.secret}?token=${bobToken}`);
    await t.ok('bob logs in again', () => bob.collection('fl_members').authWithPassword('bob@example.com', 'another-pass-1'), { pick: (r) => r.record.email });
    const newToken = await t.ok('bob gets a new file token', () => bob.files.getToken(), { pick: (v) => typeof v });
    await fetchImage(t, 'bob\'s new token', url(rec, newToken));
  },
};
