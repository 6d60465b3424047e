// Auth records through the records API: who may change `email`, `verified` and the password
// (PocketBase's RecordUpsert access levels: superusers, `manageRule` managers, the owner).
const USERS = 'ar_users';
const PASS = 'ar-pass-12345';

async function login(t, label, email) {
  const pb = t.client();
  await t.ok(label, () => pb.collection(USERS).authWithPassword(email, PASS), { pick: (a) => a.record.email });
  return pb;
}

export default {
  async 'auth-records-manage-rule'(t) {
    await t.login();
    await t.ok('create an auth collection with a manage rule', () =>
      t.pb.collections.create({
        name: USERS,
        type: 'auth',
        fields: [{ name: 'role', type: 'text' }],
        listRule: '',
        viewRule: '',
        createRule: '',
        updateRule: "id = @request.auth.id || @request.auth.role = 'admin'",
        manageRule: "@request.auth.role = 'admin'",
      }),
      { pick: (c) => [c.manageRule, c.authRule] },
    );
    const users = t.pb.collection(USERS);
    const make = (email, role) =>
      t.ok(`create ${email}`, () => users.create({ email, role, password: PASS, passwordConfirm: PASS }), {
        pick: (r) => [r.email, r.verified],
      });
    const ann = await make('ann@example.com', 'admin');
    const bob = await make('bob@example.com', 'member');
    await t.fails('a guest may not create a verified user', 400, () =>
      t.anon.collection(USERS).create({ email: 'eve@example.com', password: PASS, passwordConfirm: PASS, verified: true }),
    );
    await t.fails('a password without its confirmation', 400, () =>
      t.anon.collection(USERS).create({ email: 'eve@example.com', password: PASS }),
    );
    await t.fails('a confirmation that differs', 400, () =>
      t.anon.collection(USERS).create({ email: 'eve@example.com', password: PASS, passwordConfirm: 'other-pass-1' }),
    );
    const asBob = await login(t, 'bob logs in', 'bob@example.com');
    await t.fails('bob may not change his own email directly', 400, () =>
      asBob.collection(USERS).update(bob.id, { email: 'bobby@example.com' }),
    );
    await t.fails('nor mark himself verified', 400, () => asBob.collection(USERS).update(bob.id, { verified: true }));
    await t.fails('a new password needs the old one', 400, () =>
      asBob.collection(USERS).update(bob.id, { password: 'new-pass-12345', passwordConfirm: 'new-pass-12345' }),
    );
    await t.fails('and the right old one', 400, () =>
      asBob.collection(USERS).update(bob.id, {
        password: 'new-pass-12345',
        passwordConfirm: 'new-pass-12345',
        oldPassword: 'wrong-pass-1',
      }),
    );
    await t.ok('an unchanged email and verified state are fine', () =>
      asBob.collection(USERS).update(bob.id, { email: 'bob@example.com', verified: false, role: 'member' }),
      { pick: (r) => [r.email, r.verified] },
    );
    await t.fails('bob cannot manage ann', 404, () => asBob.collection(USERS).update(ann.id, { verified: true }));
    const asAnn = await login(t, 'ann logs in', 'ann@example.com');
    await t.ok('a manager changes bob\'s email and verified state', () =>
      asAnn.collection(USERS).update(bob.id, { email: 'robert@example.com', verified: true }),
      { pick: (r) => [r.email, r.verified] },
    );
    await t.ok('and his password without the old one', () =>
      asAnn.collection(USERS).update(bob.id, { password: 'set-by-ann-1', passwordConfirm: 'set-by-ann-1' }),
      { pick: (r) => r.email },
    );
    await t.fails('which revoked bob\'s token', 401, () => asBob.collection(USERS).authRefresh());
    await t.ok('bob logs in with the new password', () =>
      t.client().collection(USERS).authWithPassword('robert@example.com', 'set-by-ann-1'),
      { pick: (a) => [a.record.email, a.record.verified] },
    );
    await t.ok('a superuser changes anything', () => users.update(ann.id, { verified: true, email: 'ann2@example.com' }), {
      pick: (r) => [r.email, r.verified],
    });
  },

  async 'auth-records-password-login'(t) {
    await t.login();
    const name = 'ar_logins';
    await t.ok('an auth collection that logs in by username or email', () =>
      t.pb.collections.create({
        name,
        type: 'auth',
        fields: [{ name: 'username', type: 'text' }],
        indexes: [`CREATE UNIQUE INDEX idx_ar_logins_username ON ${name} (username COLLATE NOCASE)`],
        passwordAuth: { enabled: true, identityFields: ['username', 'email'] },
      }),
      { pick: (c) => c.passwordAuth },
    );
    await t.ok('create a user', () =>
      t.pb.collection(name).create({ email: 'Dana@example.com', username: 'dana', password: PASS, passwordConfirm: PASS }),
      { pick: (r) => r.username },
    );
    const users = () => t.client().collection(name);
    const byField = (identity, identityField) =>
      t.client().send(`/api/collections/${name}/auth-with-password`, {
        method: 'POST',
        body: { identity, password: PASS, identityField },
      });
    const pick = { pick: (a) => a.record.username };
    await t.ok('by email', () => users().authWithPassword('Dana@example.com', PASS), pick);
    await t.fails('the email index is case-sensitive', 400, () => users().authWithPassword('dana@example.com', PASS));
    await t.ok('by username', () => users().authWithPassword('dana', PASS), pick);
    await t.ok('the username index is COLLATE NOCASE', () => users().authWithPassword('DANA', PASS), pick);
    await t.ok('a named identity field', () =>
      byField('dana', 'username'), pick,
    );
    await t.fails('an identity field that is not one', 400, () =>
      byField('dana', 'id'),
    );
    await t.fails('the email under the username field', 400, () =>
      byField('Dana@example.com', 'username'),
    );
    await t.fails('an identity too long', 400, () => users().authWithPassword('d'.repeat(256), PASS));
    await t.fails('a wrong password', 400, () => users().authWithPassword('dana', 'wrong-pass-1'));
    await t.ok('turn password auth off', () =>
      t.pb.collections.update(name, { passwordAuth: { enabled: false, identityFields: ['username', 'email'] } }),
      { pick: (c) => c.passwordAuth.enabled },
    );
    await t.fails('password auth off', 403, () => users().authWithPassword('dana', PASS));
  },

  async 'auth-records-oauth2-secrets'(t) {
    await t.login();
    const name = 'ar_oauth2';
    const provider = {
      name: 'oidc',
      clientId: 'client-1',
      clientSecret: 'secret-1',
      authURL: 'https://idp.example.test/auth',
      tokenURL: 'https://idp.example.test/token',
      userInfoURL: 'https://idp.example.test/userinfo',
    };
    const oauth2 = (c) => c.oauth2;
    await t.ok('an auth collection with an OAuth2 provider', () =>
      t.pb.collections.create({ name, type: 'auth', oauth2: { enabled: true, providers: [provider] } }), { pick: oauth2 },
    );
    await t.ok('the client secret is never shown', () => t.pb.collections.getOne(name), { pick: oauth2 });
    await t.ok('sent back without it, it is kept', () =>
      t.pb.collections.update(name, { oauth2: { enabled: true, providers: [{ ...provider, clientSecret: undefined, clientId: 'client-2' }] } }),
      { pick: oauth2 },
    );
    await t.fails('a new provider needs its secret', 400, () =>
      t.pb.collections.update(name, {
        oauth2: { enabled: true, providers: [{ name: 'oidc', clientId: 'client-2' }, { ...provider, name: 'oidc2', clientSecret: undefined }] },
      }),
    );
    await t.ok('auth-methods lists the provider', () => t.anon.collection(name).listAuthMethods(), {
      pick: (m) => m.oauth2.providers.map((p) => [p.name, p.authURL.split('?')[0]]),
    });
  },

  async 'auth-records-options-validation'(t) {
    await t.login();
    const provider = { name: 'oidc', clientId: 'c', clientSecret: 's', authURL: 'https://idp.example.test/a' };
    const refused = (label, options) =>
      t.fails(label, 400, () => t.pb.collections.create({ name: 'ar_refused', type: 'auth', ...options }));
    await refused('an OTP too short and too brief', { otp: { enabled: true, duration: 5, length: 2 } });
    await refused('an OTP lasting more than a day', { otp: { enabled: true, duration: 90000, length: 6 } });
    await refused('MFA with one auth method', { mfa: { enabled: true, duration: 600 } });
    await refused('MFA with a bad rule', {
      mfa: { enabled: true, duration: 600, rule: 'nope = 1' },
      otp: { enabled: true, duration: 180, length: 8 },
    });
    await refused('an MFA duration out of range', { mfa: { enabled: true, duration: 1 } });
    await refused('an empty manage rule', { manageRule: '' });
    await refused('an identity field without a unique index', {
      fields: [{ name: 'handle', type: 'text' }],
      passwordAuth: { enabled: true, identityFields: ['handle'] },
    });
    await refused('an identity field that does not exist', { passwordAuth: { enabled: true, identityFields: ['ghost'] } });
    await refused('password auth without identity fields', { passwordAuth: { enabled: true, identityFields: [] } });
    await refused('an unknown provider', { oauth2: { enabled: true, providers: [{ ...provider, name: 'nope' }] } });
    await refused('a provider twice', { oauth2: { enabled: true, providers: [provider, provider] } });
    await refused('a provider without its client', {
      oauth2: { enabled: true, providers: [{ name: 'github', authURL: 'not a url' }] },
    });
    await refused('a token lasting 5 seconds', { authToken: { duration: 5 } });
    await refused('a token lasting a century', { fileToken: { duration: 3155760000 } });
    await refused('a template without a subject', { verificationTemplate: { subject: '', body: 'x' } });
    await refused('an alert template without a body', { authAlert: { enabled: true, emailTemplate: { subject: 's', body: '' } } });
    await t.ok('unchecked while OAuth2 is off', () =>
      t.pb.collections.create({ name: 'ar_accepted', type: 'auth', oauth2: { enabled: false, providers: [{ name: 'nope' }] } }),
      { pick: (c) => c.oauth2 },
    );
  },
};
