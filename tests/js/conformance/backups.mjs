// Backup scenarios, through the SDK's BackupService (`pb.backups.getFullList`, `create`,
// `upload`, `getDownloadURL` with `pb.files.getToken()`, `delete`, `restore`) and the superuser
// members of `GET /api/health`. Each runs on fresh engines (ISOLATED in harness terms: backups
// and restores are instance-wide). What legitimately differs is masked by the picks: generated
// names (they carry the time), archive sizes (the engines' databases differ), the engine's own
// data folder in a raw error; the members compared are the databases and `storage/` (PocketBase
// also keeps its `types.d.ts` in pb_data). A restore answers at once and happens in the
// background (PocketBase restarts its process, our engine reopens in place): the scenario waits,
// unrecorded, until the server answers with the restored data.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const GENERATED = /^pb_backup_acme_\d{14}\.zip$/;
// a zip holding hello.txt and no data.db
const NO_DB_ZIP =
  'UEsDBBQAAAAAABJQg11cSHz2EwAAABMAAAAJAAAAaGVsbG8udHh0bm8gZGF0YWJhc2UgaW4gaGVyZVBLAQIUAxQAAAAAABJQg11cSHz2' +
  'EwAAABMAAAAJAAAAAAAAAAAAAACAAQAAAABoZWxsby50eHRQSwUGAAAAAAEAAQA3AAAAOgAAAAAA';

/** A listing as compared: generated names masked, sizes as "a positive number". */
const listing = (items) =>
  items.map((item) => ({
    key: GENERATED.test(item.key) ? '<generated pb_backup_acme_STAMP.zip>' : item.key,
    size: Number.isInteger(item.size) && item.size > 0 ? '<bytes>' : item.size,
    modified: item.modified,
  }));

/** The member names of a zip (read from its central directory). */
function zipMembers(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = bytes.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end -= 1;
  if (end < 0) return null;
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  const names = [];
  for (let i = 0; i < count; i += 1) {
    if (view.getUint32(at, true) !== 0x02014b50) return null;
    const nameLength = view.getUint16(at + 28, true);
    const extra = view.getUint16(at + 30, true);
    const comment = view.getUint16(at + 32, true);
    names.push(new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + nameLength)));
    at += 46 + nameLength + extra + comment;
  }
  return names;
}

/** What both engines' archives hold: the databases first, then storage/ (sorted; the ids and
 * random parts of the file names masked; without PocketBase's `.attrs` metadata sidecars, which
 * its storage writes next to every file and ours does not). */
const comparableMembers = (names) => [
  ...names.filter((n) => n === 'data.db' || n === 'auxiliary.db'),
  ...names
    .filter((n) => n.startsWith('storage/') && !n.endsWith('.attrs'))
    .map((n) => n.split('/'))
    .map((p) => ['storage', ...p.slice(1, -1).map((_, i) => `<dir${i + 1}>`), p.at(-1).replace(/_[a-z0-9]{10}\./, '_RANDOM.')].join('/'))
    .sort(),
];

/** A raw error with the engine's own data folder masked. */
const masked = (err) => ({
  ...err,
  message: String(err.message).replace(/remove \S+\/backups\//, 'remove <pb_data>/backups/'),
});

async function download(t, label, url, expected = 200) {
  let entry;
  try {
    const response = await fetch(url);
    const bytes = new Uint8Array(await response.arrayBuffer());
    entry = { status: response.status, headers: {}, size: bytes.length };
    for (const name of ['content-type', 'content-disposition', 'cache-control', 'content-security-policy', 'accept-ranges']) {
      entry.headers[name] = response.headers.get(name);
    }
    if (response.status === 200) entry.members = comparableMembers(zipMembers(bytes) ?? []);
    else entry.body = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    entry = { status: 0, network: String(err?.cause?.code ?? err) };
  }
  t.note(label, { ...entry, size: entry.size > 0 ? '<bytes>' : entry.size });
  if (entry.status !== expected) t.surprises.push({ step: label, expected, got: entry.status });
  return entry;
}

async function member(t) {
  await t.ok('an auth collection', () => t.pb.collections.create({ name: 'members', type: 'auth' }), {
    pick: (c) => c.name,
  });
  const password = 'member-pass-1234';
  await t.ok('a member', () =>
    t.pb.collection('members').create({ email: 'm@example.com', password, passwordConfirm: password }),
    { pick: (r) => r.email },
  );
  const client = t.client();
  await t.ok('the member signs in', () => client.collection('members').authWithPassword('m@example.com', password), {
    pick: (r) => r.record.email,
  });
  return client;
}

/** Waits (unrecorded) until `check()` holds or 30 s passed; errors (a restarting server) retry. */
async function until(check) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      if (await check()) return true;
    } catch {
      // the server is restarting
    }
    await sleep(200);
  }
  return false;
}

const titles = (t) => t.pb.collection('notes').getFullList({ sort: 'title', fields: 'title' });

export default {
  async 'backups-create-list-delete'(t) {
    await t.fails('guests may not list backups', 401, () => t.anon.backups.getFullList());
    await t.fails('guests may not create one', 401, () => t.anon.backups.create(''));
    await t.fails('guests may not delete one', 401, () => t.anon.backups.delete('x.zip'));
    await t.fails('guests may not restore one', 401, () => t.anon.backups.restore('x.zip'));
    await t.ok('a guest sees no health details', () => t.anon.health.check());
    await t.login();
    await t.ok('a superuser sees the backup state and the proxy hints', () => t.pb.health.check());
    await t.ok('a forwarded request', () =>
      t.pb.health.check({ headers: { 'X-Forwarded-For': '203.0.113.7' } }),
    );
    await t.ok('a request through Cloudflare and Fly', () =>
      t.pb.health.check({ headers: { 'Fly-Client-IP': '198.51.100.1', 'CF-Connecting-IP': '198.51.100.2' } }),
    );
    const user = await member(t);
    await t.fails('a member may not list backups', 403, () => user.backups.getFullList());
    await t.fails('a member may not create one', 403, () => user.backups.create(''));
    await t.ok('a member sees no health details', () => user.health.check());

    await t.ok('no backups yet', () => t.pb.backups.getFullList());
    await t.ok('a backup with a generated name', () => t.pb.backups.create(''));
    await t.ok('a named backup', () => t.pb.backups.create('named_1.zip'));
    for (const [label, name] of [
      ['an uppercase name', 'Named.zip'],
      ['a name without .zip', 'named_2'],
      ['a name with a slash', 'a/b.zip'],
      ['a name too long', `${'a'.repeat(147)}.zip`],
      ['a name taken', 'named_1.zip'],
    ]) {
      await t.fails(label, 400, () => t.pb.backups.create(name));
    }
    const listed = await t.ok('both listed, sorted by key', () => t.pb.backups.getFullList(), { pick: listing });

    const token = await t.pb.files.getToken();
    const got = await download(t, 'the named backup downloaded', t.pb.backups.getDownloadURL(token, 'named_1.zip'));
    const size = (listed ?? []).find((item) => item.key === 'named_1.zip')?.size;
    t.check('the download is the listed size', got.size === size);
    await download(t, 'without a token', t.pb.backups.getDownloadURL('', 'named_1.zip'), 403);
    await download(t, 'with an auth token', t.pb.backups.getDownloadURL(t.pb.authStore.token, 'named_1.zip'), 403);
    const memberToken = await user.files.getToken();
    await download(t, "with a member's file token", t.pb.backups.getDownloadURL(memberToken, 'named_1.zip'), 403);
    await download(t, 'a missing backup', t.pb.backups.getDownloadURL(token, 'missing.zip'), 404);

    await t.ok('the named backup deleted', () => t.pb.backups.delete('named_1.zip'));
    await t.fails('deleted twice', 400, () => t.pb.backups.delete('named_1.zip').catch((err) => {
      err.response = masked(err.response);
      throw err;
    }));
    await t.fails('restoring a missing backup', 400, () => t.pb.backups.restore('named_1.zip'));
    await t.ok('the generated one is left', () => t.pb.backups.getFullList(), { pick: listing });
  },

  async 'backups-upload'(t) {
    await t.login();
    await t.ok('a collection with a file', () =>
      t.pb.collections.create({ name: 'docs', fields: [{ name: 'doc', type: 'file', maxSelect: 1 }] }),
      { pick: (c) => c.name },
    );
    await t.ok('a record with a file', () =>
      t.pb.collection('docs').create({ doc: new File(['hello backups'], 'hello.txt') }),
      { pick: (r) => typeof r.doc },
    );
    await t.ok('a backup', () => t.pb.backups.create('source.zip'));
    const token = await t.pb.files.getToken();
    const url = t.pb.backups.getDownloadURL(token, 'source.zip');
    const got = await download(t, 'the backup with storage/', url);
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());

    await t.ok('uploaded again under another name', () =>
      t.pb.backups.upload({ file: new File([bytes], 'copy.zip', { type: 'application/zip' }) }),
    );
    await t.fails('an upload without a file', 400, () => t.pb.backups.upload({}));
    await t.fails('an upload that is not a zip', 400, () =>
      t.pb.backups.upload({ file: new File(['just text'], 'notes.txt') }).catch((err) => {
        const text = err.response?.data?.file?.message ?? '';
        err.response.data.file.message = text.replace(/^"notes_[a-z0-9]{10}\.txt"/, '"notes_RANDOM.txt"');
        throw err;
      }),
    );
    await t.fails('an upload under a taken name', 400, () =>
      t.pb.backups.upload({ file: new File([bytes], 'source.zip') }),
    );
    await t.ok('both listed', () => t.pb.backups.getFullList(), { pick: listing });
    const copy = await download(t, 'the uploaded copy downloaded', t.pb.backups.getDownloadURL(token, 'copy.zip'));
    t.check('the copy is what was uploaded', copy.size === bytes.length && got.size === bytes.length);
  },

  async 'backups-restore'(t) {
    await t.login();
    await t.ok('a collection', () =>
      t.pb.collections.create({ name: 'notes', fields: [{ name: 'title', type: 'text' }] }),
      { pick: (c) => c.name },
    );
    await t.ok('a note before', () => t.pb.collection('notes').create({ title: 'before' }), { pick: (r) => r.title });
    await t.ok('a backup of it', () => t.pb.backups.create('snap.zip'));
    await t.ok('a note after', () => t.pb.collection('notes').create({ title: 'after' }), { pick: (r) => r.title });
    await t.ok('an app name after', () => t.pb.settings.update({ meta: { appName: 'Changed' } }), {
      pick: (s) => s.meta.appName,
    });

    await t.ok('the restore is accepted', () => t.pb.backups.restore('snap.zip'));
    const restored = await until(async () => (await titles(t)).map((r) => r.title).join() === 'before');
    t.check('the server answers again, with the restored data', restored);
    await t.ok('the notes after the restore', () => titles(t));
    await t.ok('the settings after the restore', () => t.pb.settings.getAll(), { pick: (s) => s.meta.appName });
    await t.ok('the superuser session still holds', () => t.pb.collections.getFullList({ filter: "name = 'notes'" }), {
      pick: (list) => list.map((c) => c.name),
    });
    await until(async () => (await t.pb.health.check()).data.canBackup === true);
    await t.ok('no operation runs any more', () => t.pb.health.check());
    await t.ok('the backups are still there', () => t.pb.backups.getFullList(), { pick: listing });
    await t.ok('the restored app writes', () => t.pb.collection('notes').create({ title: 'later' }), {
      pick: (r) => r.title,
    });

    const broken = Uint8Array.from(Buffer.from(NO_DB_ZIP, 'base64'));
    await t.ok('an archive without data.db uploaded', () =>
      t.pb.backups.upload({ file: new File([broken], 'nodb.zip') }),
    );
    await t.ok('its restore is accepted', () => t.pb.backups.restore('nodb.zip'));
    const filter = "message = 'Failed to restore backup'";
    const logged = await until(async () => (await t.pb.logs.getList(1, 1, { filter })).totalItems > 0);
    t.check('the refusal is logged', logged);
    await t.ok('the refusal', () => t.pb.logs.getList(1, 5, { filter }), {
      pick: (r) =>
        r.items.map((e) => ({
          message: e.message,
          level: e.level,
          key: e.data.key,
          error: String(e.data.error).replace(/: stat \S+data\.db: no such file or directory$/, ': stat <tmp>/data.db: no such file or directory'),
        })),
    });
    await t.ok('the data is untouched', () => titles(t));
  },
};
