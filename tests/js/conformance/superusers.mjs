// Superuser scenarios: the `_superusers` auth collection, auth-with-password, auth-refresh, the
// token as the SDK reads it, and a password change revoking the tokens issued before it.

/** What the SDK (and a frontend) reads from a token, without its run-dependent values. */
function tokenFacts(pb) {
  const [, payload] = pb.authStore.token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const now = Date.now() / 1000;
  return {
    claims: Object.keys(claims).sort(),
    type: claims.type,
    refreshable: claims.refreshable,
    idIsTheRecord: claims.id === pb.authStore.record?.id,
    collectionIsTheRecords: claims.collectionId === pb.authStore.record?.collectionId,
    hoursValid: Math.round((claims.exp - now) / 3600),
    isValid: pb.authStore.isValid,
    isSuperuser: pb.authStore.isSuperuser,
  };
}

export default {
  async 'superusers-auth'(t) {
    const auth = await t.login();
    t.note('the token as the SDK reads it', auth ? tokenFacts(t.pb) : null);
    const superusers = t.anon.collection('_superusers');
    await t.fails('a wrong password', 400, () => superusers.authWithPassword(t.email, 'wrong-password-1'));
    await t.fails('an unknown email', 400, () =>
      superusers.authWithPassword('nobody@example.com', t.password),
    );
    await t.fails('an empty identity', 400, () => superusers.authWithPassword('', ''));
    await t.fails('the email is case-sensitive', 400, () =>
      t.client().collection('_superusers').authWithPassword(t.email.toUpperCase(), t.password),
    );
    await t.ok('auth-refresh', () => t.pb.collection('_superusers').authRefresh());
    t.note('the refreshed token as the SDK reads it', tokenFacts(t.pb));
    await t.ok('the refreshed token works', () =>
      t.pb.collections.getList(1, 1, { fields: 'name', filter: 'name = "_superusers"' }),
    );
    await t.fails('auth-refresh without a token', 401, () => t.anon.collection('_superusers').authRefresh());
    const forged = t.client();
    forged.authStore.save(`${t.pb.authStore.token.slice(0, -4)}AAAA`, t.pb.authStore.record);
    await t.fails('auth-refresh with a forged signature', 401, () =>
      forged.collection('_superusers').authRefresh(),
    );
    await t.fails('a forged token is anonymous', 401, () => forged.collections.getList(1, 1));
    await t.raw(
      'the token as a Bearer token',
      200,
      '/api/collections?fields=name&filter=name%3D%22_superusers%22',
      {
        headers: { Authorization: `Bearer ${t.pb.authStore.token}` },
      },
      { auth: false },
    );
    await t.ok('create a base collection with an email field', () =>
      t.pb.collections.create({ name: 'sa_base', fields: [{ name: 'email', type: 'email' }] }),
    );
    await t.fails('auth-with-password on a base collection', 404, () =>
      t.anon.collection('sa_base').authWithPassword(t.email, t.password),
    );
    await t.ok('auth methods of _superusers', () => t.anon.collection('_superusers').listAuthMethods());
  },

  async 'superusers-password-change'(t) {
    await t.login();
    const email = 'second-superuser@example.com';
    const second = await t.ok('create a second superuser', () =>
      t.pb
        .collection('_superusers')
        .create({ email, password: 'first-password-1', passwordConfirm: 'first-password-1' }),
    );
    const other = t.client();
    await t.ok('sign in as the second superuser', () =>
      other.collection('_superusers').authWithPassword(email, 'first-password-1'),
    );
    const oldToken = other.authStore.token;
    await t.ok('its token works', () =>
      other.collections.getList(1, 1, { fields: 'name', filter: 'name = "_superusers"' }),
    );
    await t.fails('a password change without the confirmation', 400, () =>
      t.pb.collection('_superusers').update(second.id, { password: 'second-password-2' }),
    );
    await t.fails('a password change with a wrong confirmation', 400, () =>
      t.pb
        .collection('_superusers')
        .update(second.id, { password: 'second-password-2', passwordConfirm: 'other' }),
    );
    await t.fails('a password that is too short', 400, () =>
      t.pb.collection('_superusers').update(second.id, { password: 'short', passwordConfirm: 'short' }),
    );
    await t.ok('change its password', () =>
      t.pb.collection('_superusers').update(second.id, {
        password: 'second-password-2',
        passwordConfirm: 'second-password-2',
      }),
    );
    await t.fails('the old token no longer works', 401, () => other.collections.getList(1, 1));
    await t.fails('the old token cannot be refreshed', 401, () =>
      other.collection('_superusers').authRefresh(),
    );
    await t.fails('the old password no longer works', 400, () =>
      t.client().collection('_superusers').authWithPassword(email, 'first-password-1'),
    );
    const fresh = t.client();
    await t.ok('the new password works', () =>
      fresh.collection('_superusers').authWithPassword(email, 'second-password-2'),
    );
    t.check('the new token differs from the old one', fresh.authStore.token !== oldToken);
    await t.ok('the new token works', () =>
      fresh.collections.getList(1, 1, { fields: 'name', filter: 'name = "_superusers"' }),
    );
    await t.ok('the first superuser is still signed in', () => t.pb.collection('_superusers').authRefresh());
    await t.ok('a superuser may change its own password', async () => {
      const record = await fresh.collection('_superusers').update(second.id, {
        password: 'third-password-3',
        passwordConfirm: 'third-password-3',
        oldPassword: 'second-password-2',
      });
      return { email: record.email, signedOut: !fresh.authStore.isValid };
    });
    await t.fails('which revokes its own token too', 401, () => fresh.collections.getList(1, 1));
  },

  async 'superusers-records'(t) {
    await t.login();
    const superusers = t.pb.collection('_superusers');
    await t.ok('list superusers: no password, no tokenKey', () =>
      superusers.getFullList({ filter: `email = "${t.email}"` }),
    );
    await t.fails('a superuser without a password', 400, () =>
      superusers.create({ email: 'x1@example.com' }),
    );
    await t.fails('an invalid email', 400, () =>
      superusers.create({
        email: 'not-an-email',
        password: 'long-enough-1',
        passwordConfirm: 'long-enough-1',
      }),
    );
    await t.fails('a duplicate email', 400, () =>
      superusers.create({ email: t.email, password: 'long-enough-1', passwordConfirm: 'long-enough-1' }),
    );
    await t.fails('anonymous list of superusers', 403, () => t.anon.collection('_superusers').getList());
    await t.fails('anonymous create of a superuser', 403, () =>
      t.anon
        .collection('_superusers')
        .create({ email: 'x2@example.com', password: 'long-enough-1', passwordConfirm: 'long-enough-1' }),
    );
    await t.ok('a superuser may filter by the hidden password and tokenKey', () =>
      superusers.getFullList({
        filter: `email = "${t.email}" && password != "" && tokenKey != ""`,
        fields: 'email',
      }),
    );
    await t.fails('anonymous view of a superuser', 403, async () =>
      t.anon.collection('_superusers').getOne((await superusers.getFirstListItem(`email = "${t.email}"`)).id),
    );
  },
};
