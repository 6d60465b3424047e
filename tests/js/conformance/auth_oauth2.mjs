// OAuth2 scenarios: auth-with-oauth2 through PocketBase's generic `oidc` provider against real
// OpenID Connect providers on loopback (one per user), and /api/oauth2-redirect. The browser's
// part of a login (the provider's login and consent pages) is done in Python by
// tests/support/oidc.py's OidcProvider.authorize, reached through harness's OidcRelay
// (`t.oidc`); run with `Conformance(..., oidc=True)` (test_conformance_auth_oauth2.py).
//
// Users (oidc_relay.py): alice (verified email), bob (unverified email: PocketBase drops it),
// carol (verified email). Both engines log the same users in at the same time.

const PASSWORD = 'secret-pass-123';

class Idp {
  constructor(t) {
    if (!t.oidc) throw new Error('this scenario needs Conformance(..., oidc=True)');
    this.relay = t.oidc.url;
    this.users = t.oidc.users;
  }

  /** The `oauth2.providers` entry of `user`'s provider, registered as `name`. */
  provider(user, name = 'oidc') {
    return { ...this.users[user].provider, name };
  }

  /** The browser at the provider: {redirect, redirectURL, params} of where it was sent back. */
  async authorize(user, url, consent = true) {
    const response = await fetch(`${this.relay}/authorize`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, url, consent }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`oidc relay: ${body.error}`);
    return body;
  }
}

const redirectURL = (t) => new URL('/api/oauth2-redirect', t.url).toString();

/** The provider entry `name` of auth-methods (unrecorded: its state and PKCE pair are random). */
async function methodInfo(t, coll, name = 'oidc') {
  const methods = await t.client().collection(coll).listAuthMethods();
  const info = methods.oauth2.providers.find((p) => p.name === name);
  if (!info) throw new Error(`no ${name} in the auth methods of ${coll}`);
  return info;
}

/**
 * A person signing in as `user` with the provider `name` of `coll`, as the SDK builds the URL
 * (auth-methods' authURL + the client's redirect URL): {info, code, redirect, params}.
 */
async function browserLogin(t, idp, coll, user, { name = 'oidc', consent = true, redirect } = {}) {
  const info = await methodInfo(t, coll, name);
  const back = redirect ?? redirectURL(t);
  const result = await idp.authorize(user, info.authURL + encodeURIComponent(back), consent);
  return { info, back, code: result.params.code ?? '', redirect: result.redirect, params: result.params };
}

const ACCESS_TOKEN = /^[A-Za-z0-9_-]{20,}$/;

/** An auth answer without what differs from run to run (the provider's access token). */
const authAnswer = (r) => ({
  ...r,
  meta: r.meta && {
    ...r.meta,
    accessToken: ACCESS_TOKEN.test(r.meta.accessToken) ? '<access token>' : r.meta.accessToken,
  },
});

/** auth-with-oauth2 with a login's code (a recorded step). */
function exchange(t, label, client, coll, login, { createData, expected = 'ok', verifier, back } = {}) {
  const call = () =>
    client
      .collection(coll)
      .authWithOAuth2Code(
        login.info.name,
        login.code,
        verifier ?? login.info.codeVerifier,
        back ?? login.back,
        createData,
      );
  return expected === 'ok' ? t.ok(label, call, { pick: authAnswer }) : t.fails(label, expected, call);
}

/** A raw POST to auth-with-oauth2 of `coll`. */
const rawLogin = (t, label, expected, coll, body, contentType = 'application/json') =>
  t.raw(
    label,
    expected,
    `/api/collections/${coll}/auth-with-oauth2`,
    { method: 'POST', headers: { 'Content-Type': contentType }, body: typeof body === 'string' ? body : JSON.stringify(body) },
    { auth: false },
  );

/** A request to /api/oauth2-redirect, not followed: its status and Location (recorded). */
async function redirectPage(t, label, expected, path, init = {}) {
  const response = await fetch(new URL(path, t.url), { ...init, redirect: 'manual' });
  const answer = { status: response.status, location: response.headers.get('location'), body: await response.text() };
  t.note(label, answer);
  t.check(`${label}: the expected page`, answer.location === expected);
}

const FAILURE = '../_/#/auth/oauth2-redirect-failure';

// The OAuth2 options of a collection (the providers by name: how the collections API shows
// their secrets and defaults is the collections scenarios' business).
const oauth2Options = (c) => ({
  name: c.name,
  type: c.type,
  oauth2: c.oauth2 && {
    enabled: c.oauth2.enabled,
    mappedFields: c.oauth2.mappedFields,
    providers: (c.oauth2.providers ?? []).map((p) => [p.name, p.clientId, p.displayName, p.pkce]),
  },
});

/** An auth collection with OAuth2 on (the given providers and mapped fields), recorded. */
const oauth2Collection = (t, name, providers, { mappedFields = {}, fields = [], ...extra } = {}) =>
  t.ok(
    `create collection ${name}`,
    () =>
      t.pb.collections.create({
        name,
        type: 'auth',
        fields,
        oauth2: {
          enabled: true,
          providers,
          mappedFields: { id: '', name: '', username: '', avatarURL: '', ...mappedFields },
        },
        ...extra,
      }),
    { pick: oauth2Options },
  );

const externalAuths = (items) =>
  items.map(({ provider, providerId, recordRef, collectionRef }) => ({ provider, providerId, recordRef, collectionRef }));

export default {
  async 'auth-oauth2-refusals'(t) {
    const idp = new Idp(t);
    await t.login();
    await t.ok('create collection oa_refusals (OAuth2 off)', () =>
      t.pb.collections.create({ name: 'oa_refusals', type: 'auth', createRule: '', fields: [{ name: 'name', type: 'text' }] }),
    { pick: oauth2Options });
    const noCode = { info: { name: 'oidc', codeVerifier: 'v' }, code: 'some-code', back: redirectURL(t) };
    await exchange(t, 'OAuth2 off', t.client(), 'oa_refusals', noCode, { expected: 403 });
    await exchange(t, 'an unknown collection', t.client(), 'oa_missing', noCode, { expected: 404 });
    await t.ok('create base collection oa_base', () => t.pb.collections.create({ name: 'oa_base', type: 'base' }), {
      pick: (c) => c.name,
    });
    await exchange(t, 'a base collection', t.client(), 'oa_base', noCode, { expected: 404 });
    await t.ok(
      'turn OAuth2 on with the generic oidc provider',
      () =>
        t.pb.collections.update('oa_refusals', {
          oauth2: { enabled: true, providers: [idp.provider('alice')], mappedFields: { name: 'name' } },
        }),
      { pick: oauth2Options },
    );
    await t.ok('the collection as the superuser reads it', () => t.pb.collections.getOne('oa_refusals'), {
      pick: oauth2Options,
    });

    await rawLogin(t, 'an empty body', 400, 'oa_refusals', {});
    await rawLogin(t, 'no body at all', 400, 'oa_refusals', '');
    await rawLogin(t, 'a provider the collection lacks', 400, 'oa_refusals', { provider: 'github', code: 'x' });
    await rawLogin(t, 'a provider name over 100 characters', 400, 'oa_refusals', { provider: 'o'.repeat(101), code: 'x' });
    await rawLogin(t, 'a provider of the wrong type', 400, 'oa_refusals', { provider: 1, code: 'x' });
    await rawLogin(t, 'createData of the wrong type', 400, 'oa_refusals', { provider: 'oidc', code: 'x', createData: 'x' });
    await rawLogin(t, 'a body that is not JSON', 400, 'oa_refusals', '{"provider":', 'application/json');
    await rawLogin(t, 'an unsupported content type', 400, 'oa_refusals', 'provider=oidc', 'text/plain');
    await rawLogin(t, 'keys matched case-insensitively', 400, 'oa_refusals', { PROVIDER: 'nope', Code: '' });
    await exchange(t, 'a code the provider never issued', t.client(), 'oa_refusals', noCode, { expected: 400 });

    const first = await browserLogin(t, idp, 'oa_refusals', 'alice');
    t.check('the provider sent back the state of auth-methods', first.params.state === first.info.state);
    t.note('what the provider sent back', { params: Object.keys(first.params).sort(), issuer: first.params.iss === idp.users.alice.issuer });
    await exchange(t, 'a wrong PKCE verifier', t.client(), 'oa_refusals', first, { expected: 400, verifier: 'x'.repeat(43) });

    const second = await browserLogin(t, idp, 'oa_refusals', 'alice');
    await exchange(t, 'another redirect URL than the login used', t.client(), 'oa_refusals', second, {
      expected: 400,
      back: new URL('/api/oauth2-redirect?other=1', t.url).toString(),
    });

    const third = await browserLogin(t, idp, 'oa_refusals', 'alice');
    await exchange(t, 'a good code', t.client(), 'oa_refusals', third);
    await exchange(t, 'the same code again', t.client(), 'oa_refusals', third, { expected: 400 });

    const denied = await browserLogin(t, idp, 'oa_refusals', 'alice', { consent: false });
    t.note('a denied consent comes back without a code', {
      error: denied.params.error,
      description: denied.params.error_description,
      code: denied.params.code ?? null,
      state: denied.params.state === denied.info.state,
    });
    await exchange(t, 'auth-with-oauth2 after a denied consent', t.client(), 'oa_refusals', denied, { expected: 400 });

    // /api/oauth2-redirect: the state must be the id of a realtime client subscribed to @oauth2;
    // auth-methods' state is none, nor is a made-up one.
    const path = (params) => `/api/oauth2-redirect?${new URLSearchParams(params)}`;
    await redirectPage(t, 'the denied redirect', FAILURE, new URL(denied.redirect).pathname + new URL(denied.redirect).search);
    const fourth = await browserLogin(t, idp, 'oa_refusals', 'alice');
    await redirectPage(t, "a code with auth-methods' state (no realtime client)", FAILURE, path(fourth.params));
    await redirectPage(t, 'a wrong state', FAILURE, path({ ...fourth.params, state: 'not-a-realtime-client' }));
    await redirectPage(t, 'no state', FAILURE, path({ code: fourth.code }));
    await redirectPage(t, 'nothing at all', FAILURE, '/api/oauth2-redirect');
    await redirectPage(t, 'a form_post with a wrong state', FAILURE, '/api/oauth2-redirect', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ state: 'not-a-realtime-client', code: fourth.code }).toString(),
    });
    await redirectPage(t, 'a JSON post with a wrong state', FAILURE, '/api/oauth2-redirect', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ state: 'not-a-realtime-client', code: fourth.code }),
    });
    await redirectPage(t, 'an unreadable post', FAILURE, '/api/oauth2-redirect', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"state": 1}',
    });
    // the code is still good: the redirect page does not use it
    await exchange(t, 'the code of the refused redirects still logs in', t.client(), 'oa_refusals', fourth);

    // superusers cannot sign up with OAuth2: PocketBase keeps OAuth2 off for _superusers
    await t.ok('turn OAuth2 on for _superusers', () =>
      t.pb.collections.update('_superusers', { oauth2: { enabled: true, providers: [idp.provider('alice')] } }),
    { pick: oauth2Options });
    await exchange(t, 'OAuth2 for superusers', t.client(), '_superusers', noCode, { expected: 403 });
  },

  async 'auth-oauth2-signup'(t) {
    const idp = new Idp(t);
    await t.login();
    await oauth2Collection(t, 'oa_signup', [idp.provider('alice')], {
      fields: [
        { name: 'name', type: 'text' },
        { name: 'avatar', type: 'file', maxSelect: 1, mimeTypes: ['image/png'] },
      ],
      mappedFields: { name: 'name', avatarURL: 'avatar' },
      createRule: '',
      listRule: 'id = @request.auth.id',
      viewRule: 'id = @request.auth.id',
    });
    const user = t.client();
    const first = await browserLogin(t, idp, 'oa_signup', 'alice');
    const created = await exchange(t, 'the first login signs up', user, 'oa_signup', first);
    t.note('the SDK keeps the new auth', { valid: user.authStore.isValid, same: user.authStore.record?.id === created?.record?.id });
    await t.ok('auth-refresh with its token', () => user.collection('oa_signup').authRefresh());
    await t.ok('the user reads its own record', () => user.collection('oa_signup').getOne(created.record.id));
    await t.ok('the user lists its OAuth2 links', () => user.collection('_externalAuths').getFullList(), { pick: externalAuths });
    await t.ok('a guest lists no links', () => t.anon.collection('_externalAuths').getFullList(), { pick: externalAuths });

    const second = await browserLogin(t, idp, 'oa_signup', 'alice');
    const again = await exchange(t, 'the second login finds the same user', t.client(), 'oa_signup', second);
    t.check('the same record both times', again?.record?.id === created?.record?.id);
    await t.ok('one user and one link', async () => ({
      users: (await t.pb.collection('oa_signup').getFullList()).length,
      links: externalAuths(await t.pb.collection('_externalAuths').getFullList({ filter: `recordRef = "${created.record.id}"` })),
    }));

    const links = await user.collection('_externalAuths').getFullList();
    await t.ok('the user unlinks the provider', () => user.collection('_externalAuths').delete(links[0].id));
    const third = await browserLogin(t, idp, 'oa_signup', 'alice');
    const relinked = await exchange(t, 'a login after the unlink finds the user by its email', t.client(), 'oa_signup', third);
    t.check('still the same record', relinked?.record?.id === created?.record?.id);

    await t.ok('the superuser deletes the user', () => t.pb.collection('oa_signup').delete(created.record.id));
    await t.ok('its links are gone with it', () =>
      t.pb.collection('_externalAuths').getFullList({ filter: `recordRef = "${created.record.id}"` }),
    { pick: externalAuths });
    const fourth = await browserLogin(t, idp, 'oa_signup', 'alice');
    const anew = await exchange(t, 'a login after the delete signs up again', t.client(), 'oa_signup', fourth);
    t.check('a new record', Boolean(anew?.record?.id) && anew.record.id !== created.record.id);
  },

  async 'auth-oauth2-mapped-fields-and-create-data'(t) {
    const idp = new Idp(t);
    await t.login();
    await oauth2Collection(t, 'oa_mapped', [idp.provider('alice'), idp.provider('carol', 'oidc2'), idp.provider('bob', 'oidc3')], {
      fields: [
        { name: 'name', type: 'text' },
        { name: 'username', type: 'text', pattern: '^[a-z]+$' },
        { name: 'avatarUrl', type: 'url' },
        { name: 'providerId', type: 'text' },
        { name: 'nickname', type: 'text' },
      ],
      indexes: ['CREATE UNIQUE INDEX idx_oa_mapped_username ON oa_mapped (username)'],
      mappedFields: { id: 'providerId', name: 'name', username: 'username', avatarURL: 'avatarUrl' },
      createRule: '@request.context = "oauth2" && @request.body.nickname != "blocked"',
    });
    await t.ok('a user that already has the username alice', () =>
      t.pb.collection('oa_mapped').create({ email: 'someone@example.com', username: 'alice', password: PASSWORD, passwordConfirm: PASSWORD }),
    );
    await t.fails('the create rule refuses a plain create', 400, () =>
      t.anon.collection('oa_mapped').create({ email: 'plain@example.com', password: PASSWORD, passwordConfirm: PASSWORD }),
    );

    const login = () => browserLogin(t, idp, 'oa_mapped', 'alice');
    await exchange(t, 'createData the create rule refuses', t.client(), 'oa_mapped', await login(), {
      createData: { nickname: 'blocked' },
      expected: 400,
    });
    await exchange(t, 'createData that sets verified', t.client(), 'oa_mapped', await login(), {
      createData: { verified: true },
      expected: 400,
    });
    await exchange(t, 'createData with a too short password', t.client(), 'oa_mapped', await login(), {
      createData: { password: 'short', passwordConfirm: 'short' },
      expected: 400,
    });
    await exchange(t, 'createData with an invalid field value', t.client(), 'oa_mapped', await login(), {
      createData: { avatarUrl: 'not a url' },
      expected: 400,
    });
    await t.ok('nothing was created by the refused sign-ups', async () => (await t.pb.collection('oa_mapped').getFullList()).length);
    await exchange(t, 'createData and mapped fields (the username is taken)', t.client(), 'oa_mapped', await login(), {
      createData: { nickname: 'Ally', name: 'Given Name', emailVisibility: true, unknownField: 1 },
    });
    const carolLogin = await browserLogin(t, idp, 'oa_mapped', 'carol', { name: 'oidc2' });
    await exchange(t, 'another email in createData: not verified', t.client(), 'oa_mapped', carolLogin, {
      createData: { email: 'carol.other@example.com' },
    });
    const carolAgain = await browserLogin(t, idp, 'oa_mapped', 'carol', { name: 'oidc2' });
    await exchange(t, 'the next login of that unverified user', t.client(), 'oa_mapped', carolAgain);
    await t.ok('the users as the superuser sees them', () => t.pb.collection('oa_mapped').getFullList({ sort: 'email' }));

    await t.ok('only superusers may create now', () => t.pb.collections.update('oa_mapped', { createRule: null }), {
      pick: (c) => c.createRule,
    });
    const bob = await browserLogin(t, idp, 'oa_mapped', 'bob', { name: 'oidc3' });
    await exchange(t, 'a sign-up without a create rule', t.client(), 'oa_mapped', bob, { expected: 403 });
    const aliceAgain = await login();
    await exchange(t, 'an existing user still logs in', t.client(), 'oa_mapped', aliceAgain);
    const bobAsSuperuser = await browserLogin(t, idp, 'oa_mapped', 'bob', { name: 'oidc3' });
    await exchange(t, 'a superuser signs bob up, without an email', t.pb, 'oa_mapped', bobAsSuperuser, {
      expected: 400,
    });
  },

  async 'auth-oauth2-unverified-email'(t) {
    const idp = new Idp(t);
    await t.login();
    await oauth2Collection(t, 'oa_unverified', [idp.provider('bob')], {
      fields: [{ name: 'name', type: 'text' }],
      mappedFields: { name: 'name' },
      createRule: '',
    });
    await t.ok('someone signs up with bob@example.com and a password', () =>
      t.anon.collection('oa_unverified').create({ email: 'bob@example.com', password: PASSWORD, passwordConfirm: PASSWORD }),
    );
    const login = () => browserLogin(t, idp, 'oa_unverified', 'bob');
    await exchange(t, 'without an email the sign-up fails', t.client(), 'oa_unverified', await login(), { expected: 400 });
    await exchange(t, 'the taken email in createData', t.client(), 'oa_unverified', await login(), {
      createData: { email: 'bob@example.com' },
      expected: 400,
    });
    const signedUp = await exchange(t, 'another email in createData', t.client(), 'oa_unverified', await login(), {
      createData: { email: 'bob.new@example.com', password: PASSWORD, passwordConfirm: PASSWORD },
    });
    const byPassword = t.client();
    await t.ok('its password works', () => byPassword.collection('oa_unverified').authWithPassword('bob.new@example.com', PASSWORD));
    await exchange(t, 'the next OAuth2 login of that unverified user', t.client(), 'oa_unverified', await login());
    await t.fails('its password was reset', 400, () =>
      t.client().collection('oa_unverified').authWithPassword('bob.new@example.com', PASSWORD),
    );
    await t.fails('its older token was revoked', 401, () => byPassword.collection('oa_unverified').authRefresh());
    await t.ok('the users as the superuser sees them', () => t.pb.collection('oa_unverified').getFullList({ sort: 'email' }));
    await t.ok('one link, to the new user', () => t.pb.collection('_externalAuths').getFullList({ filter: `recordRef = "${signedUp?.record?.id}"` }), {
      pick: externalAuths,
    });
    const session = t.client();
    await exchange(t, 'a session of the unverified user', session, 'oa_unverified', await login());
    await t.ok('logins need a verified user now', () =>
      t.pb.collections.update('oa_unverified', { authRule: 'verified = true' }),
    { pick: (c) => c.authRule });
    await exchange(t, 'the auth rule refuses the unverified user', t.client(), 'oa_unverified', await login(), { expected: 403 });
    // verifying a user drops its OAuth2 links and the tokens it had
    await t.ok('the superuser verifies the user', () =>
      t.pb.collection('oa_unverified').update(signedUp.record.id, { verified: true }),
    );
    await t.ok('its link is gone', () => t.pb.collection('_externalAuths').getFullList({ filter: `recordRef = "${signedUp?.record?.id}"` }), {
      pick: externalAuths,
    });
    await t.fails('and so is its session', 401, () => session.collection('oa_unverified').authRefresh());
    await exchange(t, 'the provider account is a stranger again', t.client(), 'oa_unverified', await login(), { expected: 400 });
  },

  async 'auth-oauth2-link-existing'(t) {
    const idp = new Idp(t);
    await t.login();
    await oauth2Collection(t, 'oa_link', [idp.provider('carol'), idp.provider('alice', 'oidc2'), idp.provider('bob', 'oidc3')], {
      fields: [{ name: 'name', type: 'text' }],
      mappedFields: { name: 'name' },
      createRule: '',
    });
    // carol: made by a guest before her first OAuth2 login (unverified)
    await t.ok('a guest signs up carol@example.com', () =>
      t.anon.collection('oa_link').create({ email: 'carol@example.com', name: 'Pre Made', password: PASSWORD, passwordConfirm: PASSWORD }),
    );
    const carolByPassword = t.client();
    await t.ok('carol logs in with the password', () => carolByPassword.collection('oa_link').authWithPassword('carol@example.com', PASSWORD));
    const carol = await browserLogin(t, idp, 'oa_link', 'carol');
    await exchange(t, 'the OAuth2 login links the unverified user of that email', t.client(), 'oa_link', carol);
    await t.fails('the password set before is gone', 400, () =>
      t.client().collection('oa_link').authWithPassword('carol@example.com', PASSWORD),
    );
    await t.fails('and so is the token it gave', 401, () => carolByPassword.collection('oa_link').authRefresh());

    // alice: made verified by the superuser
    await t.ok('the superuser makes a verified alice@example.com', () =>
      t.pb.collection('oa_link').create({ email: 'alice@example.com', verified: true, password: PASSWORD, passwordConfirm: PASSWORD }),
    );
    const alice = await browserLogin(t, idp, 'oa_link', 'alice', { name: 'oidc2' });
    await exchange(t, 'the OAuth2 login links the verified user of that email', t.client(), 'oa_link', alice);
    await t.ok('her password still works', () => t.client().collection('oa_link').authWithPassword('alice@example.com', PASSWORD));

    // dave, logged in, links bob's provider account (it has no email) to himself
    await t.ok('a guest signs up dave@example.com', () =>
      t.anon.collection('oa_link').create({ email: 'dave@example.com', password: PASSWORD, passwordConfirm: PASSWORD }),
    );
    const dave = t.client();
    await t.ok('dave logs in with his password', () => dave.collection('oa_link').authWithPassword('dave@example.com', PASSWORD));
    const bob = await browserLogin(t, idp, 'oa_link', 'bob', { name: 'oidc3' });
    await exchange(t, 'a logged-in user links the provider account to himself', dave, 'oa_link', bob);
    await t.ok('his password still works', () => t.client().collection('oa_link').authWithPassword('dave@example.com', PASSWORD));
    const bobAgain = await browserLogin(t, idp, 'oa_link', 'bob', { name: 'oidc3' });
    await exchange(t, 'a guest login with that provider account is dave', t.client(), 'oa_link', bobAgain);
    await t.fails('which reset the unverified password', 400, () =>
      t.client().collection('oa_link').authWithPassword('dave@example.com', PASSWORD),
    );
    await t.ok('the links', async () => {
      const users = Object.fromEntries((await t.pb.collection('oa_link').getFullList()).map((u) => [u.id, u.email]));
      const links = await t.pb.collection('_externalAuths').getFullList({ filter: 'collectionRef = "' + (await t.pb.collections.getOne('oa_link')).id + '"' });
      return links.map((l) => `${l.provider} ${l.providerId} -> ${users[l.recordRef]}`).sort();
    });
    await t.ok('the users as the superuser sees them', () => t.pb.collection('oa_link').getFullList({ sort: 'email' }));
  },
};
