// The recording side of the conformance scenarios: a Trace collects, step by step, what a
// PocketBase-compatible server answered to the official SDK (or to a raw fetch).
//
// A scenario is `async (t) => { ... }` and calls, for every request it makes:
//
//   const rec = await t.ok('create a note', () => t.pb.collection('notes').create({...}));
//   await t.fails('create without title', 400, () => t.pb.collection('notes').create({}));
//   await t.raw('malformed JSON', 400, '/api/collections', { method: 'POST', body: '{' });
//   t.check('@random returns every record once', sameIds(random, created));
//   await t.ok('create with a slug', () => ..., { pick: matching({ slug: /^[a-z]{8}$/ }) });
//
// Every step lands in the trace as {step, ok: value}, {step, error: {status, response}},
// {step, status, body} or {step, note}; `pick` keeps only what is comparable across engines of
// a value (e.g. names instead of random ids). A step whose outcome is not the expected one also
// lands in `surprises`: PocketBase must never produce one, which proves that the scenario
// exercises what it claims. Labels are unique within a scenario: they align the two traces.
import PocketBase from 'pocketbase';

const describe = (value) => (value === undefined ? null : value);

function errorOf(err) {
  if (err && typeof err === 'object' && 'status' in err && 'response' in err) {
    const error = { status: err.status, response: describe(err.response) };
    if (err.status === 0) {
      const cause = err.originalError?.cause ?? err.originalError;
      error.network = String(cause?.message ?? cause ?? err.message);
    }
    return error;
  }
  throw err; // a bug in the scenario itself, not an answer of the server
}

/**
 * The mail side of a scenario run with `Conformance(..., mail=True)` (harness.py's MailRelay):
 * `settings()` is the `PATCH /api/settings` body that sends this engine's mail to its own real
 * SMTP server; `wait({to, subject, timeout})` is the oldest message not handed out yet that
 * matches, as read from the real mail ({to, subject, html, text, otp, tokens, links}), or null
 * when none came within `timeout` seconds (default 10).
 */
export class Mailbox {
  constructor({ smtp, url }) {
    this.smtp = smtp;
    this.url = url;
  }

  settings(extra = {}) {
    return { smtp: { enabled: true, host: this.smtp.host, port: this.smtp.port, tls: false, ...extra } };
  }

  async wait({ to, subject, timeout = 10 } = {}) {
    const query = new URLSearchParams({ timeout: String(timeout) });
    if (to) query.set('to', to);
    if (subject) query.set('subject', subject);
    const response = await fetch(`${this.url}/wait?${query}`, { signal: AbortSignal.timeout((timeout + 5) * 1000) });
    if (response.status === 408) return null;
    if (!response.ok) throw new Error(`mailbox ${this.url}: HTTP ${response.status}`);
    return response.json();
  }
}

export class Trace {
  constructor({ url, email, password, mail, oidc }) {
    this.url = url;
    this.email = email;
    this.password = password;
    this.mail = mail ? new Mailbox(mail) : null;
    this.oidc = oidc ?? null; // OidcRelay.config() of harness's oidc_relay.py (auth_oauth2.mjs)
    this.steps = [];
    this.surprises = [];
    this.labels = new Set();
    this.kept = new Set();
    this.pb = this.client();
    this.anon = this.client();
  }

  /** A new SDK client for this server, without auth. */
  client() {
    const pb = new PocketBase(this.url);
    pb.autoCancellation(false);
    return pb;
  }

  /** Signs the default client in as the harness's superuser (a recorded step). */
  async login() {
    return this.ok('superuser auth-with-password', () =>
      this.pb.collection('_superusers').authWithPassword(this.email, this.password),
    );
  }

  #push(label, entry) {
    if (this.labels.has(label)) throw new Error(`duplicate step label: ${label}`);
    this.labels.add(label);
    this.steps.push({ step: label, ...entry });
  }

  #record(label, entry, expected) {
    this.#push(label, entry);
    const status = entry.error ? entry.error.status : (entry.status ?? 200);
    const failed = Boolean(entry.error) || status >= 400;
    const surprise = expected === 'ok' ? failed : status !== expected;
    if (surprise) this.surprises.push({ step: label, expected, got: status });
  }

  /** A step expected to succeed: records and returns its value (undefined if it failed). */
  async ok(label, request, { pick } = {}) {
    return this.#step(label, 'ok', request, pick);
  }

  /** A step expected to fail with `status`: records the error (and returns the value if any). */
  async fails(label, status, request, { pick } = {}) {
    return this.#step(label, status, request, pick);
  }

  async #step(label, expected, request, pick = (v) => v) {
    let value;
    try {
      value = await request();
    } catch (err) {
      this.#record(label, { error: errorOf(err) }, expected);
      return undefined;
    }
    let entry;
    try {
      entry = { ok: describe(pick(value)) };
    } catch (err) {
      // An answer of an unexpected shape: keep all of it, it will show in the diff.
      entry = { ok: describe(value), unexpectedShape: String(err?.message ?? err) };
    }
    this.#record(label, entry, expected);
    return value;
  }

  /**
   * A raw HTTP request (for what the SDK cannot send): records {status, body}. `expected` is a
   * status code. `init.headers` is extended with the default client's token unless `auth` is
   * false.
   */
  async raw(label, expected, path, init = {}, { auth = true } = {}) {
    const headers = { ...(init.headers ?? {}) };
    if (auth && this.pb.authStore.token) headers.Authorization = this.pb.authStore.token;
    let entry;
    try {
      const response = await fetch(new URL(path, this.url), { ...init, headers });
      const text = await response.text();
      let body;
      try {
        body = text === '' ? null : JSON.parse(text);
      } catch {
        body = { text };
      }
      entry = { status: response.status, body };
    } catch (err) {
      entry = { status: 0, network: String(err?.cause?.code ?? err?.cause?.message ?? err) };
    }
    this.#push(label, entry);
    if (entry.status !== expected) this.surprises.push({ step: label, expected, got: entry.status });
    return entry;
  }

  /** A value computed by the scenario (e.g. a comparison of two responses). */
  note(label, value) {
    this.#push(label, { note: describe(value) });
  }

  /** Like `note`, and a surprise unless `value` is true. */
  check(label, value) {
    this.note(label, value);
    if (value !== true) this.surprises.push({ step: label, expected: true, got: value });
  }

  /** Values the normaliser must leave as they are (e.g. ids the scenario chose itself). */
  keep(...values) {
    for (const value of values) this.kept.add(value);
  }

  toJSON() {
    return { steps: this.steps, surprises: this.surprises, keep: [...this.kept] };
  }
}

/** Sorted copy of the ids of `records` (to compare sets, e.g. for `@random`). */
export const idSet = (records) => records.map((r) => r.id).sort();

/**
 * A `pick` for values generated at random (e.g. by an `autogeneratePattern`): each listed key of
 * the record (or of each record of a list or of a list result's items) becomes a description of
 * whether it matches its pattern.
 */
export const matching = (patterns) => {
  const one = (record) => {
    if (!record || typeof record !== 'object') return record;
    const copy = { ...record };
    for (const [key, pattern] of Object.entries(patterns)) {
      if (key in copy) copy[key] = pattern.test(copy[key]) ? `<matches ${pattern}>` : copy[key];
    }
    return copy;
  };
  return (value) => {
    if (Array.isArray(value)) return value.map(one);
    if (Array.isArray(value?.items)) return { ...value, items: value.items.map(one) };
    return one(value);
  };
};

/** The values of `key` in `records`, in order. */
export const pluck = (records, key) => records.map((r) => r[key]);
