// Drives a PocketBase-compatible instance with the official JS SDK for the Python tests.
//
//   node tests/js/sdk_client.mjs SCENARIO URL ['["json", "array", "of", "args"]']
//
// Prints one JSON object on stdout and exits 0, or an error JSON on stderr and exits 1.
import dns from 'node:dns';
import PocketBase from 'pocketbase';
import { Agent, EventSource, setGlobalDispatcher } from 'undici';

// Node 20 does not resolve *.localhost: send it (and localhost) to 127.0.0.1.
// Node's built-in fetch, which the SDK uses, honours undici's global dispatcher.
function lookup(hostname, options, callback) {
  const name = hostname.toLowerCase().replace(/\.$/, '');
  if (name !== 'localhost' && !name.endsWith('.localhost')) {
    return dns.lookup(hostname, options, callback);
  }
  if (options?.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
  return callback(null, '127.0.0.1', 4);
}
setGlobalDispatcher(new Agent({ connect: { lookup } }));

// Node 20 lacks EventSource (the SDK's realtime needs it); undici's uses the dispatcher above.
globalThis.EventSource ??= EventSource;
const emitWarning = process.emitWarning;
process.emitWarning = (warning, ...rest) =>
  rest[0]?.code === 'UNDICI-ES' ? undefined : emitWarning.call(process, warning, ...rest);

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)),
  ]);

async function login(pb, email, password) {
  await pb.collection('_superusers').authWithPassword(email, password);
}

async function ensureNotes(pb) {
  try {
    return await pb.collections.getOne('notes');
  } catch (err) {
    if (err?.status !== 404) throw err;
    return createNotes(pb);
  }
}

const createNotes = (pb) =>
  pb.collections.create({ name: 'notes', type: 'base', fields: [{ name: 'title', type: 'text' }] });

const titles = (records) => records.map((r) => r.title);

const scenarios = {
  async health(pb) {
    return pb.health.check();
  },

  async 'superuser-crud'(pb, email, password) {
    await login(pb, email, password);
    const collection = await createNotes(pb);
    const notes = pb.collection('notes');
    const created = [];
    for (const title of ['alpha', 'bravo', 'cobalt']) created.push(await notes.create({ title }));
    const filtered = await notes.getList(1, 50, { filter: 'title ~ "b"', sort: '-title' });
    const updated = await notes.update(created[0].id, { title: 'alpha2' });
    await notes.delete(created[1].id);
    const remaining = await notes.getFullList({ sort: 'title' });
    return {
      collection: { id: collection.id, name: collection.name, type: collection.type },
      created: created.map((r) => ({ id: r.id, title: r.title })),
      filtered: { titles: titles(filtered.items), totalItems: filtered.totalItems },
      updated: { id: updated.id, title: updated.title },
      remaining: titles(remaining),
    };
  },

  async realtime(pb, email, password, timeoutMs = 10000) {
    await login(pb, email, password);
    await ensureNotes(pb);
    const events = [];
    let wake = () => {};
    const unsubscribe = await withTimeout(
      pb.collection('notes').subscribe('*', (e) => {
        events.push(e);
        wake();
      }),
      Number(timeoutMs),
      'subscribe',
    );
    const record = await pb.collection('notes').create({ title: 'realtime' });
    const matching = () => events.find((e) => e.record?.id === record.id);
    await withTimeout(
      new Promise((resolve) => {
        wake = () => matching() && resolve();
        wake();
      }),
      Number(timeoutMs),
      'realtime create event',
    );
    await unsubscribe();
    const event = matching();
    return { action: event.action, id: event.record.id, title: event.record.title };
  },

  async list(pb, email, password, collection) {
    await login(pb, email, password);
    return { titles: titles(await pb.collection(collection).getFullList()) }; // server's order
  },
};

async function main([scenario, url, args = '[]']) {
  const run = scenarios[scenario];
  if (!run || !url) {
    throw new Error(`usage: sdk_client.mjs {${Object.keys(scenarios).join('|')}} URL ['[json args]']`);
  }
  const pb = new PocketBase(url);
  pb.autoCancellation(false);
  return run(pb, ...JSON.parse(args));
}

try {
  process.stdout.write(`${JSON.stringify(await main(process.argv.slice(2)))}\n`);
  process.exit(0);
} catch (err) {
  const cause = err?.cause?.cause ?? err?.cause; // the network error behind a failed fetch
  const error = {
    error: String(err?.message ?? err),
    status: err?.status,
    response: err?.response,
    cause: cause ? String(cause.message ?? cause) : undefined,
  };
  process.stderr.write(`${JSON.stringify(error)}\n`);
  process.exit(1);
}
