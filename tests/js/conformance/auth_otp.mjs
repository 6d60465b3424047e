// OTP, MFA, impersonation and auth-methods scenarios. Every OTP is read from the real mail the
// engine sent to its own SMTP server (harness.py's MailRelay, `t.mail`); run with
// `Conformance(..., isolated=True, mail=True)` (tests/conformance/test_conformance_auth_otp.py).
import { createHash } from 'node:crypto';

const PASSWORD = 'secret-pass-123';
const META = {
  appName: 'Conformance',
  appURL: 'http://app.example.test',
  senderName: 'Support',
  senderAddress: 'support@example.test',
};
const RECORD_ID = /^[a-z0-9]{15}$/;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Points the engine's mail at its own SMTP server and sets the sender (one recorded step). */
async function mailSetup(t) {
  if (!t.mail) throw new Error('this scenario needs Conformance(..., mail=True)');
  await t.login();
  await t.ok('send mail to the test SMTP server', () => t.pb.settings.update({ ...t.mail.settings(), meta: META }), {
    pick: (s) => [s.meta, s.smtp.enabled],
  });
}

const authOptions = (c) => ({
  name: c.name,
  type: c.type,
  passwordAuth: c.passwordAuth,
  otp: c.otp && { enabled: c.otp.enabled, duration: c.otp.duration, length: c.otp.length },
  mfa: c.mfa,
  oauth2: c.oauth2 && { enabled: c.oauth2.enabled, providers: (c.oauth2.providers ?? []).map((p) => p.name) },
});

/** An auth collection with a `name` field (its auth options recorded). */
const authCollection = (t, name, extra = {}, fields = [{ name: 'name', type: 'text' }]) =>
  t.ok(`create collection ${name}`, () => t.pb.collections.create({ name, type: 'auth', fields, ...extra }), {
    pick: authOptions,
  });

const updateCollection = (t, label, name, changes) =>
  t.ok(label, () => t.pb.collections.update(name, changes), { pick: authOptions });

/** A user of `coll`, created by the superuser. */
const user = (t, coll, email, extra = {}) =>
  t.ok(`create ${coll} user ${email}`, () =>
    t.pb.collection(coll).create({ email, password: PASSWORD, passwordConfirm: PASSWORD, name: email.split('@')[0], ...extra }),
  );

const claimsOf = (token) => {
  try {
    return JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url').toString());
  } catch {
    return null;
  }
};

/** What a token says, comparable across engines. */
function noteClaims(t, label, token, record, duration) {
  const claims = claimsOf(token) ?? {};
  const { exp, id, collectionId, ...rest } = claims;
  t.note(label, { names: Object.keys(claims).sort(), ...rest, forRecord: id === record.id && collectionId === record.collectionId });
  t.check(`${label}: lasts ${duration}s`, Math.abs(exp - Date.now() / 1000 - duration) < 60);
}

const post = (body, headers = {}) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

const hasOtpId = (r) => ({ ...r, otpId: RECORD_ID.test(r?.otpId) ? '<otpId>' : r?.otpId });
const login = (r) => ({ record: r.record, token: typeof r.token === 'string' && r.token.length > 0 });

/** request-otp for `email` (a recorded step); the otpId. */
async function requestOtp(t, label, coll, email, client = t.anon) {
  const answer = await t.ok(label, () => client.collection(coll).requestOTP(email), { pick: hasOtpId });
  return answer?.otpId;
}

/**
 * The OTP mail to `to` (recorded as a note with the code and id masked), once the engine has
 * stored where it sent it (PocketBase writes `sentTo` after the SMTP exchange); the code.
 */
async function otpMail(t, label, to, otpId, length = 8) {
  const found = await t.mail.wait({ to, subject: 'OTP' });
  if (found === null) {
    t.check(`${label}: a mail arrived`, false);
    return null;
  }
  const code = found.otp ?? '';
  const masked = (text) => text.split(code).join('<otp>').split(otpId).join('<otpId>');
  t.note(label, {
    from: found.from,
    fromName: found.fromName,
    to: found.to,
    subject: found.subject,
    html: masked(found.html),
    // the end of the text part is left out: how a MIME library ends a part is no OTP matter
    text: masked(found.text).trimEnd(),
    code: new RegExp(`^[0-9]{${length}}$`).test(code) ? `<${length} digits>` : code,
  });
  await sentTo(t, label, otpId);
  return code;
}

/** Waits (unrecorded, as the superuser) until the OTP `otpId` knows where it was sent. */
async function sentTo(t, label, otpId) {
  for (let i = 0; i < 50; i++) {
    try {
      const item = await t.pb.collection('_otps').getOne(otpId);
      if (item.sentTo) return;
    } catch {
      // not there (yet)
    }
    await sleep(100);
  }
  t.check(`${label}: the OTP records where it was sent`, false);
}

/** Proves that no OTP mail to `to` arrives within `seconds`. */
async function noMail(t, label, to, seconds = 1.5) {
  const found = await t.mail.wait({ to, timeout: seconds });
  t.check(label, found === null ? true : `a mail arrived: ${found.subject}`);
}

/** A first factor: the 401 `{mfaId}` answer, recorded with the id masked; the mfaId. */
async function firstFactor(t, label, request) {
  let mfaId = null;
  await t.fails(label, 401, async () => {
    try {
      return await request();
    } catch (err) {
      if (err?.response?.mfaId) {
        mfaId = err.response.mfaId;
        err.response = { ...err.response, mfaId: RECORD_ID.test(mfaId) ? '<mfaId>' : mfaId };
      }
      throw err;
    }
  });
  return mfaId;
}

/** An OTP login of `email` in `coll` from the request to the code; [otpId, code]. */
async function otpFor(t, label, coll, email, length = 8) {
  const otpId = await requestOtp(t, `${label}: request-otp`, coll, email);
  const code = await otpMail(t, `${label}: the OTP mail`, email, otpId, length);
  return [otpId, code];
}

const s256 = (verifier) => createHash('sha256').update(verifier).digest('base64url');

/** An auth-methods provider entry with its random state and PKCE pair described. */
function provider(p) {
  const stateOk = /^[A-Za-z0-9]{30}$/.test(p.state);
  const pkce = p.codeVerifier !== '';
  const url = String(p.authURL)
    .split(p.state)
    .join('<state>')
    .split(p.codeChallenge || '\u0000')
    .join('<challenge>');
  return {
    ...p,
    state: stateOk ? '<state>' : p.state,
    authURL: url,
    authUrl: p.authUrl === p.authURL ? '<same as authURL>' : p.authUrl,
    codeVerifier: pkce ? (/^[A-Za-z0-9]{43}$/.test(p.codeVerifier) ? '<verifier>' : p.codeVerifier) : '',
    codeChallenge: pkce ? (p.codeChallenge === s256(p.codeVerifier) ? '<S256 of the verifier>' : p.codeChallenge) : p.codeChallenge,
  };
}

const methods = (m) => ({
  ...m,
  oauth2: { ...m.oauth2, providers: m.oauth2.providers.map(provider) },
  ...(m.authProviders ? { authProviders: m.authProviders.map(provider) } : {}),
});

const PROVIDERS = [
  { name: 'github', clientId: 'gh-client', clientSecret: 'gh-secret' },
  { name: 'apple', clientId: 'apple-client', clientSecret: 'apple-secret' },
  {
    name: 'oidc',
    clientId: 'oidc-client',
    clientSecret: 'oidc-secret',
    displayName: 'Our IdP',
    authURL: 'https://idp.example.test/authorize?tenant=acme',
    tokenURL: 'https://idp.example.test/token',
    userInfoURL: 'https://idp.example.test/userinfo',
    pkce: false,
  },
  {
    name: 'oidc2',
    clientId: 'oidc2-client',
    clientSecret: 'oidc2-secret',
    authURL: 'https://idp2.example.test/authorize',
    tokenURL: 'https://idp2.example.test/token',
    userInfoURL: 'https://idp2.example.test/userinfo',
  },
];

export default {
  async 'auth-methods-true-state'(t) {
    await t.login();
    await authCollection(t, 'am_plain');
    await t.ok('a new auth collection', () => t.anon.collection('am_plain').listAuthMethods(), { pick: methods });
    await t.ok('the superusers', () => t.anon.collection('_superusers').listAuthMethods(), { pick: methods });
    await authCollection(
      t,
      'am_all',
      {
        passwordAuth: { enabled: true, identityFields: ['email', 'username'] },
        otp: { enabled: true, duration: 120, length: 6 },
        mfa: { enabled: true, duration: 300 },
        oauth2: { enabled: true, providers: PROVIDERS },
        indexes: ['CREATE UNIQUE INDEX `idx_am_all_username` ON `am_all` (`username`)'],
      },
      [{ name: 'username', type: 'text' }],
    );
    const all = await t.ok('every method on', () => t.anon.collection('am_all').listAuthMethods(), { pick: methods });
    const again = await t.client().collection('am_all').listAuthMethods();
    t.check(
      'every call makes a new state and PKCE pair',
      all?.oauth2.providers[0].state !== again.oauth2.providers[0].state &&
        all?.oauth2.providers[0].codeVerifier !== again.oauth2.providers[0].codeVerifier,
    );
    await t.raw(
      "PocketBase's legacy members",
      200,
      '/api/collections/am_all/auth-methods?fields=authProviders.name,authProviders.logo,usernamePassword,emailPassword',
      {},
      { auth: false },
    );
    await updateCollection(t, 'turn password auth off', 'am_all', { passwordAuth: { enabled: false } });
    await t.ok('password auth off', () => t.anon.collection('am_all').listAuthMethods(), { pick: methods });
    await updateCollection(t, 'turn mfa and oauth2 off', 'am_all', {
      passwordAuth: { enabled: true, identityFields: ['username'] },
      mfa: { enabled: false },
      oauth2: { enabled: false },
    });
    await t.ok('mfa and oauth2 off', () => t.anon.collection('am_all').listAuthMethods(), { pick: methods });
    await t.ok('create a base collection', () =>
      t.pb.collections.create({ name: 'am_base', type: 'base', fields: [{ name: 'title', type: 'text' }] }),
      { pick: (c) => c.name },
    );
    await t.fails('a base collection', 404, () => t.anon.collection('am_base').listAuthMethods());
    await t.fails('a missing collection', 404, () => t.anon.collection('am_nope').listAuthMethods());
  },

  async 'auth-otp-request'(t) {
    await mailSetup(t);
    await authCollection(t, 'otp_req', { otp: { enabled: false } });
    const users = t.anon.collection('otp_req');
    await t.fails('request-otp with otp off', 403, () => users.requestOTP('ann@example.com'));
    await t.fails('auth-with-otp with otp off', 403, () => users.authWithOTP('abcdefghijklmno', '12345678'));
    await updateCollection(t, 'turn otp on', 'otp_req', { otp: { enabled: true, duration: 60, length: 6 } });
    const ann = await user(t, 'otp_req', 'ann@example.com');
    await user(t, 'otp_req', 'reuse@example.com');

    await t.fails('no email', 400, () => users.requestOTP(''));
    await t.fails('not an email', 400, () => users.requestOTP('ann-at-example'));
    await t.fails('an email too long', 400, () => users.requestOTP(`${'a'.repeat(250)}@example.com`));
    await t.raw('an email that is a number', 400, '/api/collections/otp_req/request-otp', post({ email: 7 }), { auth: false });
    await t.raw('a body that is not JSON', 400, '/api/collections/otp_req/request-otp', post('{"email":'), { auth: false });
    await t.fails('a base collection', 404, () => t.anon.collection('_otps').requestOTP('ann@example.com'));
    await t.fails('a missing collection', 404, () => t.anon.collection('otp_nope').requestOTP('ann@example.com'));

    const fake = await requestOtp(t, 'an unknown email gets an otpId too', 'otp_req', 'nobody@example.com');
    await noMail(t, 'no mail for the unknown email', 'nobody@example.com');
    await t.fails('the made-up otpId is no OTP', 400, () => users.authWithOTP(fake, '123456'));
    await requestOtp(t, 'the email in other case is another email', 'otp_req', 'ANN@example.com');
    await noMail(t, 'no mail for the other case', 'ann@example.com', 1);

    const otpId = await requestOtp(t, 'Ann asks for an OTP', 'otp_req', 'ann@example.com');
    await otpMail(t, 'the OTP mail', 'ann@example.com', otpId, 6);
    await t.ok('the superuser sees the stored OTP', () => t.pb.collection('_otps').getOne(otpId));
    await t.ok('the OTPs of the collection', () =>
      t.pb.collection('_otps').getFullList({ filter: `collectionRef = '${ann?.collectionId}'` }),
      { pick: (items) => items.map((o) => [o.recordRef, o.sentTo, o.password]) },
    );
    await t.ok('Ann sees her own OTPs', async () => {
      const client = t.client();
      await client.collection('otp_req').authWithPassword('ann@example.com', PASSWORD);
      return client.collection('_otps').getFullList();
    }, { pick: (items) => items.map((o) => Object.keys(o).sort()) });

    const ids = [];
    for (let i = 1; i <= 11; i++) {
      ids.push(await requestOtp(t, `OTP request ${i} of the same user`, 'otp_req', 'reuse@example.com'));
    }
    t.check('the first ten are ten OTPs', new Set(ids.slice(0, 10)).size === 10);
    t.check('the eleventh reuses the newest', ids[10] === ids[9]);
    let mails = 0;
    while ((await t.mail.wait({ to: 'reuse@example.com', timeout: mails < 10 ? 10 : 1.5 })) !== null) mails++;
    t.note('mails sent for eleven requests', mails);
  },

  async 'auth-otp-login'(t) {
    await mailSetup(t);
    await authCollection(t, 'otp_users', { otp: { enabled: true, duration: 120, length: 8 }, authToken: { duration: 3600 } });
    await authCollection(t, 'otp_other', { otp: { enabled: true, duration: 120, length: 8 } });
    const ann = await user(t, 'otp_users', 'ann@example.com');
    await user(t, 'otp_users', 'vic@example.com', { verified: true });
    const moved = await user(t, 'otp_users', 'moved@example.com');
    const gone = await user(t, 'otp_users', 'gone@example.com');
    const rekeyed = await user(t, 'otp_users', 'rekey@example.com');
    await user(t, 'otp_other', 'ann@example.com');
    const users = t.anon.collection('otp_users');

    const [annOtp, annCode] = await otpFor(t, 'Ann', 'otp_users', 'ann@example.com');
    await t.fails('a wrong code', 400, () => users.authWithOTP(annOtp, '00000000'));
    await t.fails('no otpId and no code', 400, () => users.authWithOTP('', ''));
    await t.fails('an otpId and a code too long', 400, () => users.authWithOTP('x'.repeat(256), '1'.repeat(72)));
    await t.raw('an otpId that is a number', 400, '/api/collections/otp_users/auth-with-otp', post({ otpId: 5, password: '1' }), {
      auth: false,
    });
    await t.fails('an unknown otpId', 400, () => users.authWithOTP('abcdefghijklmno', annCode));
    const [otherOtp, otherCode] = await otpFor(t, 'Ann of the other collection', 'otp_other', 'ann@example.com');
    await t.fails('an OTP of another collection', 400, () => users.authWithOTP(otherOtp, otherCode));
    const asAnn = t.client();
    const signed = await t.ok('Ann signs in with her OTP', () => asAnn.collection('otp_users').authWithOTP(annOtp, annCode), {
      pick: login,
    });
    if (signed) noteClaims(t, 'her token', signed.token, ann, 3600);
    await t.fails('the OTP is used up', 400, () => users.authWithOTP(annOtp, annCode));
    await t.fails('the OTP is gone', 404, () => t.pb.collection('_otps').getOne(annOtp));
    // an OTP sent to her address verified her, and (no MFA) gave her a random password
    await t.fails('her password no longer works', 400, () => users.authWithPassword('ann@example.com', PASSWORD));
    await t.ok('her OTP token refreshes', () => asAnn.collection('otp_users').authRefresh(), { pick: login });

    const [vicOtp, vicCode] = await otpFor(t, 'Vic (verified)', 'otp_users', 'vic@example.com');
    await t.ok('Vic signs in with his OTP', () => users.authWithOTP(vicOtp, vicCode), { pick: login });
    await t.ok('a verified user keeps his password', () => users.authWithPassword('vic@example.com', PASSWORD), {
      pick: login,
    });

    const [movedOtp, movedCode] = await otpFor(t, 'Mo', 'otp_users', 'moved@example.com');
    await t.ok('Mo gets a new address', () =>
      t.pb.collection('otp_users').update(moved.id, { email: 'mo@example.com' }),
      { pick: (r) => [r.email, r.verified] },
    );
    await t.fails('a new address deletes his OTPs', 404, () => t.pb.collection('_otps').getOne(movedOtp));
    await t.fails('the OTP sent to his former address', 400, () => users.authWithOTP(movedOtp, movedCode));

    const [goneOtp, goneCode] = await otpFor(t, 'Gus', 'otp_users', 'gone@example.com');
    await t.ok('Gus is deleted', () => t.pb.collection('otp_users').delete(gone.id));
    await t.fails('his OTP went with him', 404, () => t.pb.collection('_otps').getOne(goneOtp));
    await t.fails('the OTP of a deleted user', 400, () => users.authWithOTP(goneOtp, goneCode));

    const [rekeyOtp, rekeyCode] = await otpFor(t, 'Rex', 'otp_users', 'rekey@example.com');
    await t.ok('the superuser sets a new password for Rex', () =>
      t.pb.collection('otp_users').update(rekeyed.id, { password: 'another-pass-1', passwordConfirm: 'another-pass-1' }),
      { pick: (r) => r.email },
    );
    await t.fails('a new password deletes his OTPs', 404, () => t.pb.collection('_otps').getOne(rekeyOtp));
    await t.fails('the OTP issued before the password change', 400, () => users.authWithOTP(rekeyOtp, rekeyCode));
  },

  async 'auth-otp-rate-limit'(t) {
    await mailSetup(t);
    await authCollection(t, 'otp_rl', { otp: { enabled: true, duration: 120, length: 6 } });
    await user(t, 'otp_rl', 'rita@example.com');
    await user(t, 'otp_rl', 'ron@example.com');
    const users = t.anon.collection('otp_rl');
    const [otpId, code] = await otpFor(t, 'Rita', 'otp_rl', 'rita@example.com', 6);
    for (let i = 1; i <= 5; i++) {
      await t.fails(`wrong code ${i}`, 400, () => users.authWithOTP(otpId, '000000'));
    }
    await t.fails('the sixth attempt is refused', 429, () => users.authWithOTP(otpId, '000000'));
    await t.fails('the right code too', 429, () => users.authWithOTP(otpId, code));
    const [newOtp, newCode] = await otpFor(t, 'Rita again', 'otp_rl', 'rita@example.com', 6);
    await t.fails('a new OTP of the same user too', 429, () => users.authWithOTP(newOtp, newCode));
    await t.fails('the superuser too', 429, () => t.pb.collection('otp_rl').authWithOTP(newOtp, newCode));
    const [ronOtp, ronCode] = await otpFor(t, 'Ron', 'otp_rl', 'ron@example.com', 6);
    await t.ok('another user is not held back', () => users.authWithOTP(ronOtp, ronCode), { pick: login });
    await t.ok('a change of settings', () => t.pb.settings.update({ meta: { ...META, appName: 'Conformance 2' } }), {
      pick: (s) => s.meta.appName,
    });
    await t.ok('starts the limiter afresh', () => users.authWithOTP(newOtp, newCode), { pick: login });
  },

  async 'auth-mfa'(t) {
    await mailSetup(t);
    await authCollection(t, 'mfa_users', {
      otp: { enabled: true, duration: 120, length: 8 },
      mfa: { enabled: true, duration: 120 },
      authToken: { duration: 3600 },
    });
    await authCollection(t, 'mfa_other', {
      otp: { enabled: true, duration: 120, length: 8 },
      mfa: { enabled: true, duration: 120 },
    });
    const mia = await user(t, 'mfa_users', 'mia@example.com');
    await user(t, 'mfa_users', 'max@example.com');
    await user(t, 'mfa_other', 'mia@example.com');
    const users = t.anon.collection('mfa_users');

    const mfaId = await firstFactor(t, 'a password alone asks for a second factor', () =>
      users.authWithPassword('mia@example.com', PASSWORD),
    );
    await t.ok('the MFA session', () => t.pb.collection('_mfas').getOne(mfaId));
    await t.fails('the same method twice', 400, () => users.authWithPassword('mia@example.com', PASSWORD, { mfaId }));
    await t.fails('an unknown MFA session', 400, () =>
      users.authWithPassword('mia@example.com', PASSWORD, { mfaId: 'abcdefghijklmno' }),
    );
    await t.fails("another user's MFA session", 400, () => users.authWithPassword('max@example.com', PASSWORD, { mfaId }));
    const otherMfa = await firstFactor(t, 'Mia of the other collection, first factor', () =>
      t.anon.collection('mfa_other').authWithPassword('mia@example.com', PASSWORD),
    );
    const [otpId, code] = await otpFor(t, 'Mia', 'mfa_users', 'mia@example.com');
    await t.fails('an MFA session of another collection', 400, () => users.authWithOTP(otpId, code, { mfaId: otherMfa }));
    const [otpId2, code2] = await otpFor(t, 'Mia, second OTP', 'mfa_users', 'mia@example.com');
    const asMia = t.client();
    const signed = await t.ok('the OTP completes the login', () =>
      asMia.collection('mfa_users').authWithOTP(otpId2, code2, { mfaId }),
      { pick: login },
    );
    if (signed) noteClaims(t, 'her token', signed.token, mia, 3600);
    await t.fails('the MFA session is used up', 404, () => t.pb.collection('_mfas').getOne(mfaId));
    await t.ok('refresh needs no second factor', () => asMia.collection('mfa_users').authRefresh(), { pick: login });
    // with MFA on, an OTP verifies without replacing the password
    const again = await firstFactor(t, 'her password still works as a first factor', () =>
      users.authWithPassword('mia@example.com', PASSWORD),
    );
    t.check('a new MFA session', Boolean(again) && again !== mfaId);

    const [otpId3, code3] = await otpFor(t, 'Mia, OTP first', 'mfa_users', 'mia@example.com');
    const otpFirst = await firstFactor(t, 'an OTP alone asks for a second factor', () => users.authWithOTP(otpId3, code3));
    await t.ok('its MFA session', () => t.pb.collection('_mfas').getOne(otpFirst), { pick: (m) => m.method });
    await t.raw(
      'the password with the mfaId in the body completes it',
      200,
      '/api/collections/mfa_users/auth-with-password',
      post({ identity: 'mia@example.com', password: PASSWORD, mfaId: otpFirst }),
      { auth: false },
    );
    await t.fails('a completed session cannot be used again', 400, () =>
      users.authWithPassword('mia@example.com', PASSWORD, { mfaId: otpFirst }),
    );

    await updateCollection(t, 'mfa only for rule@', 'mfa_users', { mfa: { enabled: true, duration: 120, rule: "email = 'rule@example.com'" } });
    await user(t, 'mfa_users', 'rule@example.com');
    await t.ok('max signs in with his password alone', () => users.authWithPassword('max@example.com', PASSWORD), {
      pick: login,
    });
    await t.ok('an mfaId means nothing when the rule does not ask', () =>
      users.authWithPassword('max@example.com', PASSWORD, { mfaId: 'abcdefghijklmno' }),
      { pick: login },
    );
    await firstFactor(t, 'the rule asks rule@ for a second factor', () => users.authWithPassword('rule@example.com', PASSWORD));
    await updateCollection(t, 'mfa when a header says so', 'mfa_users', {
      mfa: { enabled: true, duration: 120, rule: "@request.headers.x_mfa = 'yes' && verified = false" },
    });
    await t.ok('max without the header', () => users.authWithPassword('max@example.com', PASSWORD), { pick: login });
    await firstFactor(t, 'max with the header', () =>
      users.authWithPassword('max@example.com', PASSWORD, { headers: { 'x-mfa': 'yes' } }),
    );
    await t.ok('mia (verified by her OTP) with the header', () =>
      users.authWithPassword('mia@example.com', PASSWORD, { headers: { 'x-mfa': 'yes' } }),
      { pick: login },
    );
    await updateCollection(t, 'mfa again for everyone', 'mfa_users', { mfa: { enabled: true, duration: 120, rule: '' } });
    const pending = await firstFactor(t, 'a pending session', () => users.authWithPassword('max@example.com', PASSWORD));
    await t.ok('a new password for max', async () => {
      const rows = await t.pb.collection('mfa_users').getFullList({ filter: "email = 'max@example.com'" });
      return t.pb.collection('mfa_users').update(rows[0].id, { password: 'another-pass-1', passwordConfirm: 'another-pass-1' });
    }, { pick: (r) => r.email });
    await t.fails('a password change ends his MFA sessions', 404, () => t.pb.collection('_mfas').getOne(pending));
  },

  async 'auth-mfa-and-otp-expiry'(t) {
    await mailSetup(t);
    await authCollection(t, 'mfx_users', {
      otp: { enabled: true, duration: 10, length: 8 },
      mfa: { enabled: true, duration: 10 },
    });
    await user(t, 'mfx_users', 'exa@example.com');
    const users = t.anon.collection('mfx_users');
    const mfaId = await firstFactor(t, 'a first factor', () => users.authWithPassword('exa@example.com', PASSWORD));
    const [otpId, code] = await otpFor(t, 'Exa', 'mfx_users', 'exa@example.com');
    await t.ok('auth-methods tell the durations', () => users.listAuthMethods(), { pick: (m) => [m.mfa, m.otp] });
    await sleep(11_000);
    await t.fails('an expired OTP', 400, () => users.authWithOTP(otpId, code, { mfaId }));
    await t.ok('an expired OTP stays stored until the clean-up', () => t.pb.collection('_otps').getOne(otpId), {
      pick: (o) => o.sentTo,
    });
    await t.fails('an expired MFA session', 400, () => users.authWithPassword('exa@example.com', PASSWORD, { mfaId }));
    await t.fails('an expired MFA session is deleted when used', 404, () => t.pb.collection('_mfas').getOne(mfaId));
    const [freshOtp, freshCode] = await otpFor(t, 'Exa, fresh OTP', 'mfx_users', 'exa@example.com');
    await firstFactor(t, 'a fresh OTP is a first factor again', () => users.authWithOTP(freshOtp, freshCode));
  },

  async 'auth-impersonate'(t) {
    await t.login();
    await authCollection(t, 'imp_users', {
      otp: { enabled: true },
      mfa: { enabled: true, duration: 120 },
      authToken: { duration: 1000 },
      viewRule: 'id = @request.auth.id',
    });
    await authCollection(t, 'imp_plain');
    await t.ok('create a base collection', () =>
      t.pb.collections.create({ name: 'imp_notes', type: 'base', fields: [{ name: 'title', type: 'text' }] }),
      { pick: (c) => c.name },
    );
    const ivy = await user(t, 'imp_users', 'ivy@example.com');
    await user(t, 'imp_plain', 'ian@example.com');
    const ian = t.client();
    await t.ok('ian signs in', () => ian.collection('imp_plain').authWithPassword('ian@example.com', PASSWORD), {
      pick: login,
    });

    await t.fails('a guest cannot impersonate', 401, () => t.anon.collection('imp_users').impersonate(ivy.id, 0));
    await t.fails('a user cannot impersonate', 403, () => ian.collection('imp_users').impersonate(ivy.id, 0));
    await t.fails('an unknown record', 404, () => t.pb.collection('imp_users').impersonate('abcdefghijklmno', 0));
    await t.fails('a base collection', 404, () => t.pb.collection('imp_notes').impersonate(ivy.id, 0));
    await t.fails('a missing collection', 404, () => t.pb.collection('imp_nope').impersonate(ivy.id, 0));
    await t.fails('a negative duration', 400, () => t.pb.collection('imp_users').impersonate(ivy.id, -1));
    const path = `/api/collections/imp_users/impersonate/${ivy.id}`;
    await t.raw('a fractional duration', 400, path, post({ duration: 1.5 }));
    await t.raw('a duration that is a string', 400, path, post({ duration: '10' }));

    const client = await t.ok('the superuser impersonates Ivy for 100 s (no MFA)', () =>
      t.pb.collection('imp_users').impersonate(ivy.id, 100),
      { pick: (c) => ({ record: c.authStore.record, valid: c.authStore.isValid }) },
    );
    const token = client?.authStore.token;
    if (token) noteClaims(t, 'the impersonation token', token, ivy, 100);
    await t.ok('Ivy, as the impersonation', () => client.collection('imp_users').getOne(ivy.id));
    await t.ok('refreshing it answers the same token', () => client.collection('imp_users').authRefresh(), {
      pick: (r) => ({ record: r.record, same: r.token === token }),
    });
    const byDefault = await t.ok('without a duration', () => t.pb.collection('imp_users').impersonate(ivy.id, 0), {
      pick: (c) => c.authStore.isValid,
    });
    if (byDefault) noteClaims(t, 'its token', byDefault.authStore.token, ivy, 1000);
    const form = new FormData();
    form.set('duration', '50');
    await t.ok('a duration from a form', () =>
      t.pb.send(path, { method: 'POST', body: form }),
      { pick: (r) => claimsOf(r.token)?.refreshable },
    );
    const self = (await t.pb.collection('_superusers').getFullList())[0];
    await t.ok('a superuser impersonated', () => t.pb.collection('_superusers').impersonate(self.id, 60), {
      pick: (c) => ({ record: c.authStore.record, superuser: c.authStore.isSuperuser }),
    });
  },

  async 'auth-superuser-otp-mfa'(t) {
    await mailSetup(t);
    await t.ok('the superusers get OTP and MFA', () =>
      t.pb.collections.update('_superusers', { otp: { enabled: true, duration: 120 }, mfa: { enabled: true, duration: 120 } }),
      { pick: authOptions },
    );
    const admins = t.anon.collection('_superusers');
    await t.ok('the superusers auth-methods', () => admins.listAuthMethods(), { pick: methods });
    const mfaId = await firstFactor(t, 'a superuser password alone', () => admins.authWithPassword(t.email, t.password));
    const [otpId, code] = await otpFor(t, 'the superuser', '_superusers', t.email);
    const admin = t.client();
    await t.ok('the OTP completes the superuser login', () => admin.collection('_superusers').authWithOTP(otpId, code, { mfaId }), {
      pick: login,
    });
    await t.ok('the superuser token works', () => admin.collections.getOne('_superusers'), { pick: (c) => c.name });
    const [otpId2, code2] = await otpFor(t, 'the superuser, OTP first', '_superusers', t.email);
    await firstFactor(t, 'a superuser OTP alone', () => admins.authWithOTP(otpId2, code2));
    await t.ok('OTP without MFA for the superusers', () =>
      t.pb.collections.update('_superusers', { otp: { enabled: true, duration: 120 }, mfa: { enabled: false } }),
      { pick: authOptions },
    );
    await firstFactor(t, 'a superuser password alone, MFA forced', () => admins.authWithPassword(t.email, t.password));
  },
};
