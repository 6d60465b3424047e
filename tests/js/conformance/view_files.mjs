// Files seen through view collections (GET /api/files/{view}/{id}/{name} serves the source
// record's file: plain, aliased and joined columns, a view of a view, protected files under the
// view's own viewRule), and uploads to `hidden` file fields (ignored unless a superuser sends
// them, in record requests and in batches).
//
// Stored names end with a random `_xxxxxxxxxx` part on both engines: it is masked.
import { enableBatch } from './batch.mjs';
import { imageSize } from './files.mjs';
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
// 150x100, as files.mjs's
const PHOTO = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAJYAAABkCAIAAADrOV6nAAABCElEQVR4nO3TQQkAMRAEwcs917+oyIqIPEJDlYKBZtae+Sj7Xw/gloR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdhnoR5EuZJmCdh3prZrzdwxQvzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzJMyTME/CPAnzDk/mAn/zhHtwAAAAAElFTkSuQmCC', 'base64');
const fieldsOf = (coll) => coll.fields.map((f) => ({ name: f.name, type: f.type, maxSelect: f.maxSelect, protected: f.protected }));

/** GET `path` without auth (a recorded step): status, headers PocketBase sets, the bytes. */
const get = (t, label, path) =>
  t.ok(label, async () => {
    const response = await fetch(new URL(path, t.url));
    const bytes = Buffer.from(await response.arrayBuffer());
    const type = response.headers.get('content-type');
    return {
      status: response.status,
      contentType: type,
      disposition: mask(response.headers.get('content-disposition')),
      body: type?.startsWith('application/json') ? JSON.parse(bytes.toString()) : bytes.toString('hex'),
    };
  });

const view = (t, name, viewQuery, rules = { listRule: '', viewRule: '' }) =>
  t.ok(`create view ${name}`, () => t.pb.collections.create({ name, type: 'view', viewQuery, ...rules }), { pick: fieldsOf });

export default {
  async 'files-view-collection'(t) {
    await t.login();
    const open = { listRule: '', viewRule: '' };
    const posts = await collection(t, 'fv_posts', [
      { name: 'title', type: 'text' },
      { name: 'cover', type: 'file', maxSelect: 1 },
      { name: 'gallery', type: 'file', maxSelect: 3 },
      { name: 'secret', type: 'file', maxSelect: 1, protected: true },
    ], open);
    await collection(t, 'fv_notes', [
      { name: 'body', type: 'text' },
      { name: 'post', type: 'relation', collectionId: posts.id, maxSelect: 1 },
      { name: 'att', type: 'file', maxSelect: 2 },
    ], open);
    const post = await t.ok('a post with files', () =>
      t.pb.collection('fv_posts').create({
        title: 'first',
        cover: text('the cover', 'cover.txt'),
        gallery: [text('one', 'one.txt'), new File([PNG], 'pixel.png', { type: 'image/png' }), new File([PHOTO], 'photo.png', { type: 'image/png' })],
        secret: text('secret!', 'secret.txt'),
      }), { pick: mask });
    const other = await t.ok('another post', () =>
      t.pb.collection('fv_posts').create({ title: 'other', cover: text('other cover', 'other.txt') }), { pick: mask });
    const note = await t.ok('a note of the post', () =>
      t.pb.collection('fv_notes').create({ body: 'n', post: post.id, att: [text('att', 'attachment.txt')] }), { pick: mask });
    await view(t, 'fv_plain', "SELECT id, title, cover, gallery FROM fv_posts WHERE title = 'first'");
    await view(t, 'fv_alias', 'select p.id, p.cover as picture, p.gallery as pictures from fv_posts p');
    await view(t, 'fv_nested', 'select id, picture from fv_alias');
    await view(t, 'fv_joined', 'SELECT n.id, n.att, p.cover AS postCover FROM fv_notes n LEFT JOIN fv_posts p ON p.id = n.post');
    await view(t, 'fv_private', 'select id, secret from fv_posts', { listRule: null, viewRule: null });
    await view(t, 'fv_guarded', 'select id, title, secret from fv_posts', { listRule: '', viewRule: "title = 'first'" });

    const files = `/api/files`;
    await get(t, 'the cover through a plain view', `${files}/fv_plain/${post.id}/${post.cover}`);
    await get(t, 'a gallery file through a plain view', `${files}/fv_plain/${post.id}/${post.gallery[0]}`);
    await get(t, 'the cover through an aliased view', `${files}/fv_alias/${post.id}/${post.cover}`);
    await get(t, 'the png through an aliased multiple field', `${files}/fv_alias/${post.id}/${post.gallery[1]}`);
    await get(t, 'the png with download=1', `${files}/fv_alias/${post.id}/${post.gallery[1]}?download=1`);
    const thumb = (label, path) =>
      t.ok(label, async () => {
        const response = await fetch(new URL(path, t.url));
        const bytes = Buffer.from(await response.arrayBuffer());
        const h = (key) => response.headers.get(key);
        return { status: response.status, contentType: h('content-type'), disposition: mask(h('content-disposition')), size: imageSize(bytes) };
      });
    await thumb('a thumb through a view', `${files}/fv_alias/${post.id}/${post.gallery[2]}?thumb=100x100`);
    await thumb('a thumb through a plain view', `${files}/fv_plain/${post.id}/${post.gallery[2]}?thumb=100x100`);
    await thumb('a size the field does not have through a view', `${files}/fv_alias/${post.id}/${post.gallery[2]}?thumb=10x10`);
    await get(t, 'the cover through a view of a view', `${files}/fv_nested/${post.id}/${post.cover}`);
    await get(t, 'the post cover through a joined view', `${files}/fv_joined/${note.id}/${post.cover}`);
    await get(t, 'the note attachment through a joined view', `${files}/fv_joined/${note.id}/${note.att[0]}`);
    await get(t, 'a file of another record of the view', `${files}/fv_alias/${post.id}/${other.cover}`);
    await get(t, 'a record the view does not hold', `${files}/fv_plain/${other.id}/${other.cover}`);
    await get(t, 'a file of no column of the view', `${files}/fv_plain/${post.id}/${post.secret}`);
    await get(t, 'an unknown name', `${files}/fv_alias/${post.id}/nothere_abcdefghij.txt`);
    await get(t, 'a protected file of a superusers-only view without a token', `${files}/fv_private/${post.id}/${post.secret}`);
    await get(t, 'a protected file of a view whose rule lets a guest see it', `${files}/fv_guarded/${post.id}/${post.secret}`);
    await t.ok('a protected file of a superusers-only view with a file token', async () => {
      const token = await t.pb.files.getToken();
      const record = await t.pb.collection('fv_private').getOne(post.id);
      const response = await fetch(t.pb.files.getURL(record, record.secret, { token }));
      return { status: response.status, body: Buffer.from(await response.arrayBuffer()).toString() };
    });
    await t.ok('the SDK URL of a view record file', async () => {
      const record = await t.pb.collection('fv_nested').getOne(post.id);
      const response = await fetch(t.pb.files.getURL(record, record.picture));
      return { status: response.status, body: await response.text() };
    });
  },

  async 'files-hidden-field'(t) {
    await t.login();
    await enableBatch(t);
    const rules = { listRule: '', viewRule: '', createRule: '', updateRule: '' };
    await collection(t, 'fh_items', [
      { name: 'title', type: 'text' },
      { name: 'secret', type: 'file', maxSelect: 1, maxSize: 10, hidden: true },
    ], rules);
    const guest = t.anon.collection('fh_items');
    const small = await t.ok('a guest uploads to a hidden field', () =>
      guest.create({ title: 'small', secret: text('small', 'small.txt') }), { pick: mask });
    await t.ok('a guest uploads too big a file to a hidden field', () =>
      guest.create({ title: 'big', secret: text('far too big for it', 'big.txt') }), { pick: mask });
    if (small) {
      await t.ok('a guest updates a hidden field', () => guest.update(small.id, { secret: text('upd', 'update.txt') }), { pick: mask });
    }
    await t.ok('a guest batch with a hidden field file', () => {
      const batch = t.anon.createBatch();
      batch.collection('fh_items').create({ title: 'batch', secret: text('far too big for it', 'batch.txt') });
      return batch.send();
    }, { pick: mask });
    await t.ok('a superuser uploads to the hidden field', () =>
      t.pb.collection('fh_items').create({ title: 'su', secret: text('tiny', 'tiny.txt') }), { pick: mask });
    await t.fails('a superuser uploads too big a file to it', 400, () =>
      t.pb.collection('fh_items').create({ title: 'su big', secret: text('far too big for it', 'big.txt') }));
    await t.ok('what the superuser sees', () => t.pb.collection('fh_items').getFullList({ sort: 'title' }), { pick: mask });
  },
};
