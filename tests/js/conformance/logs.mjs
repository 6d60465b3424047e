// Request-log scenarios: the log that earlier requests wrote, read through the SDK's LogService
// (`pb.logs.getList`, `getOne`, `getStats`) and DELETE /api/logs, and the `settings.logs`
// options. Both engines write their log in batches after the requests, so a scenario first
// polls (unrecorded; a successful /api/logs request is never logged itself) until the entries
// it made are there. Each scenario runs on fresh engines (ISOLATED in harness terms: the log is
// instance-wide), and its requests carry a marker so that it lists only what it made.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const MARK = 'logsmark';
const MARKED = `message ~ '${MARK}'`;

/** Waits (unrecorded) until `filter` matches at least `count` entries, or 20 s passed. */
async function settled(t, filter, count) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const found = await t.pb.logs.getList(1, 1, { filter });
    if (found.totalItems >= count) return;
    await sleep(200);
  }
}

/** An entry as compared: its time of execution only as a type (it is measured). */
const entry = (e) => {
  const { execTime, ...data } = e.data ?? {};
  return {
    keys: Object.keys(e).sort(),
    id: e.id,
    created: e.created,
    level: e.level,
    message: e.message,
    data: { ...data, execTime: typeof execTime },
  };
};
const entries = (result) => ({ ...result, items: result.items.map(entry) });

export default {
  async 'logs-list-view-stats'(t) {
    await t.login();
    await t.fails('guests may not list the log', 401, () => t.anon.logs.getList(1, 10));
    await t.raw('a guest request', 200, `/api/health?mark=${MARK}`, {}, { auth: false });
    await t.raw('an unknown route', 404, `/api/nope?mark=${MARK}`);
    await t.fails('a refused collection', 400, () =>
      t.pb.collections.create({ name: '' }, { query: { mark: MARK } }),
    );
    await t.raw('a superuser request', 200, `/api/settings?mark=${MARK}`, {}, {});
    await settled(t, MARKED, 4);

    const all = await t.ok('the entries, in the order written', () =>
      t.pb.logs.getList(1, 50, { filter: MARKED, sort: '@rowid' }), { pick: entries },
    );
    const first = all?.items?.[0];
    if (!first) throw new Error('no log entries');
    const one = await t.ok('one entry', () => t.pb.logs.getOne(first.id), { pick: entry });
    t.check('the entry is the one listed', JSON.stringify(one) === JSON.stringify(first));
    await t.fails('an unknown entry', 404, () => t.pb.logs.getOne('nope12345678901'));
    await t.ok('the failed requests, by status', () =>
      t.pb.logs.getList(1, 50, { filter: `${MARKED} && data.status >= 400`, sort: '-data.status' }),
      { pick: (r) => r.items.map((e) => [e.message, e.level, e.data.status, e.data.error, e.data.details]) },
    );
    await t.ok('by url and auth', () =>
      t.pb.logs.getList(1, 50, { filter: `data.url ~ '${MARK}' && data.auth = '_superusers'`, sort: 'created,@rowid' }),
      { pick: (r) => [r.totalItems, r.items.map((e) => e.message)] },
    );
    await t.ok('a page without totals', () =>
      t.pb.logs.getList(2, 1, { filter: MARKED, sort: '@rowid', skipTotal: true }), { pick: entries },
    );
    await t.ok('a page with totals', () => t.pb.logs.getList(3, 1, { filter: MARKED, sort: '-@rowid' }), {
      pick: entries,
    });
    await t.ok('chosen fields', () =>
      t.pb.logs.getList(1, 2, { filter: MARKED, sort: '@rowid', fields: 'message,data.status,data.method' }),
    );
    await t.fails('a filter on an unknown field', 400, () => t.pb.logs.getList(1, 5, { filter: 'nope = 1' }));
    await t.fails('a malformed filter', 400, () => t.pb.logs.getList(1, 5, { filter: 'level ==' }));
    await t.fails('an unknown sort', 400, () => t.pb.logs.getList(1, 5, { sort: 'nope' }));
    await t.ok('the stats of the marked entries', () => t.pb.logs.getStats({ filter: MARKED }));
    await t.ok('the stats of the failed ones', () =>
      t.pb.logs.getStats({ filter: `${MARKED} && level = 8` }),
    );
    await t.ok('the stats of everything', () => t.pb.logs.getStats(), {
      pick: (s) => [Array.isArray(s), s.length > 0, s.map((item) => Object.keys(item).sort())],
    });
    await t.fails('stats with a bad filter', 400, () => t.pb.logs.getStats({ filter: 'nope = 1' }));

    // Of the requests to /api/logs, only the failed ones were logged.
    await settled(t, "message ~ '/api/logs'", 6);
    await t.ok('the logged requests to the log', () =>
      t.pb.logs.getList(1, 50, { filter: "message ~ '/api/logs'", sort: '@rowid' }),
      { pick: (r) => r.items.map((e) => [e.message, e.data.status, e.data.error]) },
    );
    await t.raw('a guest may not delete the log', 401, '/api/logs', { method: 'DELETE' }, { auth: false });
    await t.raw('delete every entry', 204, '/api/logs', { method: 'DELETE' });
    await t.ok('the log is empty', () => t.pb.logs.getList(1, 10), { pick: entries });
    await t.ok('and so are its stats', () => t.pb.logs.getStats());
    await t.ok('the retention is unchanged', () => t.pb.settings.getAll(), { pick: (s) => s.logs });
  },

  async 'logs-settings'(t) {
    await t.login();
    await t.ok('the log settings of a fresh instance', () => t.pb.settings.getAll(), { pick: (s) => s.logs });
    await t.ok('log auth ids, not addresses', () =>
      t.pb.settings.update({ logs: { logAuthId: true, logIP: false } }), { pick: (s) => s.logs },
    );
    // (only the message of /api/health: it tells a superuser more, which is not the point here)
    await t.ok('a request with an auth id', () => t.pb.send('/api/health', { query: { mark: `${MARK}a` } }), {
      pick: (r) => r.message,
    });
    await t.raw('a guest request without one', 200, `/api/health?mark=${MARK}b`, {}, { auth: false });
    await settled(t, MARKED, 2);
    await t.ok('what was logged of them', () =>
      t.pb.logs.getList(1, 10, { filter: MARKED, sort: '@rowid' }), { pick: entries },
    );
    await t.ok('keep errors only', () => t.pb.settings.update({ logs: { minLevel: 5 } }), {
      pick: (s) => s.logs,
    });
    await t.ok('the entries below the new level are gone', () =>
      t.pb.logs.getList(1, 10, { filter: 'level < 5' }), { pick: (r) => r.totalItems },
    );
    await t.raw('a request now below the level', 200, `/api/health?mark=${MARK}c`, {}, { auth: false });
    await t.raw('a failed one', 404, `/api/nope?mark=${MARK}c`);
    await settled(t, `message ~ '${MARK}c'`, 1);
    await sleep(500);
    await t.ok('only the failed one was logged', () =>
      t.pb.logs.getList(1, 10, { filter: `message ~ '${MARK}c'` }), { pick: (r) => r.items.map((e) => e.message) },
    );
    await t.ok('keep no log', () => t.pb.settings.update({ logs: { minLevel: 0, maxDays: 0 } }), {
      pick: (s) => s.logs,
    });
    await t.ok('the log was emptied', () => t.pb.logs.getList(1, 10), { pick: (r) => r.totalItems });
    await t.raw('a request with no log', 200, `/api/health?mark=${MARK}d`, {}, { auth: false });
    await t.raw('a failed request with no log', 404, `/api/nope?mark=${MARK}d`);
    await sleep(4_000); // longer than either engine waits before writing
    await t.ok('nothing was logged', () => t.pb.logs.getList(1, 10), { pick: (r) => r.totalItems });
    await t.ok('no stats either', () => t.pb.logs.getStats());
    await t.fails('a negative retention', 400, () => t.pb.settings.update({ logs: { maxDays: -1 } }));
  },
};
