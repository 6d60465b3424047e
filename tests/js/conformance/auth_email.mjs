// E-mail auth scenarios: request/confirm verification, password reset and e-mail change, and
// the settings' test e-mail. Every mail goes to a real SMTP server of the engine's own
// (harness.py's MailRelay, `t.mail`) and every token is read from the real message. Run with
// `Conformance(..., mail=True)` (tests/conformance/test_conformance_auth_email.py).
import { collection } from './records.mjs';

const PASSWORD = 'secret-pass-123';
const META = {
  appName: 'Conformance',
  appURL: 'http://app.example.test',
  senderName: 'Support',
  senderAddress: 'support@example.test',
};

/** Points the engine's mail at its own SMTP server and sets the sender (one recorded step). */
async function mailSetup(t) {
  if (!t.mail) throw new Error('this scenario needs Conformance(..., mail=True)');
  await t.login();
  await t.ok('send mail to the test SMTP server', () => t.pb.settings.update({ ...t.mail.settings(), meta: META }), {
    pick: (s) => [s.meta, s.smtp.enabled],
  });
}

/** An auth collection with a `name` field. */
const authCollection = (t, name, extra = {}) =>
  collection(t, name, [{ name: 'name', type: 'text' }], { type: 'auth', ...extra });

/** A user of `coll`, created by the superuser. */
const user = (t, coll, email, extra = {}) =>
  t.ok(`create ${coll} user ${email}`, () =>
    t.pb.collection(coll).create({ email, password: PASSWORD, passwordConfirm: PASSWORD, name: email.split('@')[0], ...extra }),
  );

/** A client signed in as `email` of `coll` (a recorded step). */
async function signIn(t, coll, email, password = PASSWORD, label = `${email} signs in`) {
  const client = t.client();
  await t.ok(label, () => client.collection(coll).authWithPassword(email, password), {
    pick: (r) => r.record.verified,
  });
  return client;
}

const claimsOf = (token) => {
  try {
    return JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url').toString());
  } catch {
    return null;
  }
};

/** The next mail to `to` (subject containing `subject`), recorded as a note; null if none. */
async function mail(t, label, to, subject) {
  const found = await t.mail.wait({ to, subject });
  if (found === null) {
    t.check(`${label}: a mail arrived`, false);
    return null;
  }
  t.note(label, {
    from: found.from,
    fromName: found.fromName,
    to: found.to,
    subject: found.subject,
    html: found.html,
    // trimmed: our mailer's text/plain part ends with a CRLF that PocketBase's has not
    text: found.text.replace(/\s+$/, ''),
    tokens: Object.keys(found.tokens),
  });
  return found;
}

/** Proves that no mail to `to` arrives within `seconds`. */
async function noMail(t, label, to, seconds = 1.5) {
  const found = await t.mail.wait({ to, timeout: seconds });
  t.check(label, found === null ? true : `a mail arrived: ${found.subject}`);
}

/** What a token says, comparable across engines: its claim names and the plain ones. */
function noteClaims(t, label, token, record, duration) {
  const claims = claimsOf(token) ?? {};
  const { exp, id, collectionId, ...rest } = claims;
  t.note(label, {
    names: Object.keys(claims).sort(),
    ...rest,
    forRecord: id === record.id && collectionId === record.collectionId,
  });
  t.check(`${label}: lasts ${duration}s`, Math.abs(exp - Date.now() / 1000 - duration) < 60);
}

/**
 * The token with its signature changed (same claims). The first character is changed: the last
 * one of an HS256 signature has two unused bits, and Go's decoder ignores them (a token whose
 * last character differs only there still verifies on PocketBase).
 */
const tampered = (token) => {
  const [head, body, sig] = token.split('.');
  const first = sig.startsWith('A') ? 'B' : 'A';
  return `${head}.${body}.${first}${sig.slice(1)}`;
};

const post = (path, body, headers = {}) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

export default {
  async 'auth-email-verification'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_ver');
    await authCollection(t, 'ae_ver_other');
    await collection(t, 'ae_ver_base', [{ name: 'title', type: 'text' }]);
    const ann = await user(t, 'ae_ver', 'ann@example.com');
    await user(t, 'ae_ver', 'bob@example.com', { verified: true });
    await user(t, 'ae_ver_other', 'carol@example.com');
    const users = t.anon.collection('ae_ver');

    await t.fails('an unknown collection', 404, () => t.anon.collection('ae_nope').requestVerification('ann@example.com'));
    await t.fails('a base collection', 404, () => t.anon.collection('ae_ver_base').requestVerification('ann@example.com'));
    await t.fails('superusers are verified', 400, () => t.anon.collection('_superusers').requestVerification(t.email));
    await t.fails('no email', 400, () => users.requestVerification(''));
    await t.fails('not an email', 400, () => users.requestVerification('ann-at-example'));
    await t.fails('an email too long', 400, () => users.requestVerification(`${'a'.repeat(250)}@example.com`));
    await t.raw('an email that is a number', 400, '/api/collections/ae_ver/request-verification', post('', { email: 7 }), {
      auth: false,
    });
    await t.raw('a body that is not JSON', 400, '/api/collections/ae_ver/request-verification', post('', '{"email":'), {
      auth: false,
    });
    await t.ok('an unknown email is answered the same', () => users.requestVerification('nobody@example.com'));

    await t.ok('Ann asks for a verification mail', () => users.requestVerification('ann@example.com'));
    const first = await mail(t, 'the verification mail', 'ann@example.com', 'Verify');
    const token = first?.tokens['confirm-verification'];
    if (!token) throw new Error('no verification token in the mail');
    noteClaims(t, 'the verification token', token, ann, 86400);
    await t.ok('Ann asks again at once', () => users.requestVerification('ann@example.com'));
    await noMail(t, 'no second mail within the resend throttle', 'ann@example.com');
    await noMail(t, 'no mail for the unknown email', 'nobody@example.com', 0.2);
    await t.ok('a verified user asks', () => users.requestVerification('bob@example.com'));
    await noMail(t, 'no mail for a verified user', 'bob@example.com');

    await t.ok('Carol asks in the other collection', () =>
      t.anon.collection('ae_ver_other').requestVerification('carol@example.com'),
    );
    const carols = await mail(t, 'the other collection mail', 'carol@example.com', 'Verify');
    const carolToken = carols?.tokens['confirm-verification'];

    await t.fails('confirm without a token', 400, () => users.confirmVerification(''));
    await t.fails('confirm a token that is none', 400, () => users.confirmVerification('not-a-token'));
    await t.fails('confirm a tampered token', 400, () => users.confirmVerification(tampered(token)));
    await t.fails('confirm a token of another collection', 400, () => users.confirmVerification(carolToken));
    await t.fails('confirm on superusers', 400, () => t.anon.collection('_superusers').confirmVerification(token));
    await t.fails('confirm on a base collection', 404, () => t.anon.collection('ae_ver_base').confirmVerification(token));
    await t.raw('confirm with a token that is a number', 400, '/api/collections/ae_ver/confirm-verification', post('', { token: 1 }), {
      auth: false,
    });

    await t.ok('Ann asks for a password reset', () => users.requestPasswordReset('ann@example.com'));
    const reset = await mail(t, 'the reset mail of Ann', 'ann@example.com', 'Reset');
    await t.fails('a reset token does not verify', 400, () =>
      users.confirmVerification(reset?.tokens['confirm-password-reset'] ?? ''),
    );

    const asAnn = await signIn(t, 'ae_ver', 'ann@example.com');
    await t.ok('Ann confirms while signed in', () => asAnn.collection('ae_ver').confirmVerification(token));
    t.note('the SDK marks the signed-in record verified', asAnn.authStore.record?.verified ?? null);
    await t.ok('her token is still good', () => asAnn.collection('ae_ver').authRefresh(), {
      pick: (r) => r.record.verified,
    });
    await t.ok('the same token confirms again', () => users.confirmVerification(token));
    await t.ok('Ann is verified', () => t.pb.collection('ae_ver').getOne(ann.id), { pick: (r) => r.verified });
    await t.ok('a verified Ann asks again', () => users.requestVerification('ann@example.com'));
    await noMail(t, 'no mail once verified', 'ann@example.com');

    const eve = await user(t, 'ae_ver', 'eve@example.com');
    await t.ok('Eve asks for a verification mail', () => users.requestVerification('eve@example.com'));
    const eves = await mail(t, 'the verification mail of Eve', 'eve@example.com', 'Verify');
    await t.ok('a superuser changes her email', () => t.pb.collection('ae_ver').update(eve.id, { email: 'eve2@example.com' }), {
      pick: (r) => r.email,
    });
    await t.fails('her token died with the old address', 400, () =>
      users.confirmVerification(eves?.tokens['confirm-verification'] ?? ''),
    );
  },

  async 'auth-email-verification-without-password-auth'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_nopass', { passwordAuth: { enabled: false, identityFields: ['email'] } });
    const dora = await user(t, 'ae_nopass', 'dora@example.com');
    const users = t.anon.collection('ae_nopass');
    await t.ok('Dora asks for a verification mail', () => users.requestVerification('dora@example.com'));
    const found = await mail(t, 'the verification mail', 'dora@example.com', 'Verify');
    await t.fails('no password reset without password auth', 400, () => users.requestPasswordReset('dora@example.com'));
    await t.ok('turn password auth on', () =>
      t.pb.collections.update('ae_nopass', { passwordAuth: { enabled: true, identityFields: ['email'] } }),
      { pick: (c) => c.passwordAuth },
    );
    const asDora = await signIn(t, 'ae_nopass', 'dora@example.com');
    await t.ok('turn password auth off again', () =>
      t.pb.collections.update('ae_nopass', { passwordAuth: { enabled: false, identityFields: ['email'] } }),
      { pick: (c) => c.passwordAuth },
    );
    await t.ok('Dora confirms', () => users.confirmVerification(found?.tokens['confirm-verification'] ?? ''));
    await t.ok('Dora is verified', () => t.pb.collection('ae_nopass').getOne(dora.id), { pick: (r) => r.verified });
    // the confirmation set a random password: her tokens and her password are gone
    await t.fails('her old token is revoked', 401, () => asDora.collection('ae_nopass').authRefresh());
    await t.ok('turn password auth on to try her password', () =>
      t.pb.collections.update('ae_nopass', { passwordAuth: { enabled: true, identityFields: ['email'] } }),
      { pick: (c) => c.passwordAuth },
    );
    await t.fails('her password no longer works', 400, () =>
      t.client().collection('ae_nopass').authWithPassword('dora@example.com', PASSWORD),
    );
  },

  async 'auth-email-password-reset'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_reset');
    await authCollection(t, 'ae_reset_other');
    const dan = await user(t, 'ae_reset', 'dan@example.com');
    await user(t, 'ae_reset_other', 'erin@example.com');
    const users = t.anon.collection('ae_reset');

    await t.fails('no email', 400, () => users.requestPasswordReset(''));
    await t.fails('not an email', 400, () => users.requestPasswordReset('dan'));
    await t.fails('a base collection', 404, () => t.anon.collection('ae_nope').requestPasswordReset('dan@example.com'));
    await t.ok('an unknown email is answered the same', () => users.requestPasswordReset('nobody@example.com'));
    await t.ok('an email in another case is not Dan', () => users.requestPasswordReset('DAN@example.com'));

    const asDan = await signIn(t, 'ae_reset', 'dan@example.com');
    await t.ok('Dan asks for a reset', () => users.requestPasswordReset('dan@example.com'));
    const found = await mail(t, 'the reset mail', 'dan@example.com', 'Reset');
    const token = found?.tokens['confirm-password-reset'];
    if (!token) throw new Error('no reset token in the mail');
    noteClaims(t, 'the reset token', token, dan, 1800);
    await t.ok('Dan asks again at once', () => users.requestPasswordReset('dan@example.com'));
    await noMail(t, 'no second mail within the resend throttle', 'dan@example.com');
    await noMail(t, 'no mail for the unknown email', 'nobody@example.com', 0.2);
    await noMail(t, 'no mail for the other case', 'DAN@example.com', 0.2);

    await t.ok('Erin asks in the other collection', () =>
      t.anon.collection('ae_reset_other').requestPasswordReset('erin@example.com'),
    );
    const erins = await mail(t, 'the other collection mail', 'erin@example.com', 'Reset');
    await t.ok('Dan asks for a verification mail', () => users.requestVerification('dan@example.com'));
    const verification = await mail(t, 'the verification mail of Dan', 'dan@example.com', 'Verify');

    await t.fails('confirm with nothing', 400, () => users.confirmPasswordReset('', '', ''));
    await t.fails('confirm with everything wrong', 400, () => users.confirmPasswordReset('nope', 'short', 'other'));
    await t.fails('a tampered token', 400, () => users.confirmPasswordReset(tampered(token), 'new-pass-456', 'new-pass-456'));
    await t.fails('a token of another collection', 400, () =>
      users.confirmPasswordReset(erins?.tokens['confirm-password-reset'] ?? '', 'new-pass-456', 'new-pass-456'),
    );
    await t.fails('a verification token', 400, () =>
      users.confirmPasswordReset(verification?.tokens['confirm-verification'] ?? '', 'new-pass-456', 'new-pass-456'),
    );
    await t.fails('a password too short', 400, () => users.confirmPasswordReset(token, 'short', 'short'));
    await t.fails('passwords that differ', 400, () => users.confirmPasswordReset(token, 'new-pass-456', 'new-pass-789'));
    await t.fails('a password too long for the field', 400, () =>
      users.confirmPasswordReset(token, 'p'.repeat(80), 'p'.repeat(80)),
    );
    await t.raw('a password that is a number', 400, '/api/collections/ae_reset/confirm-password-reset', post('', { token, password: 12345678, passwordConfirm: 12345678 }), {
      auth: false,
    });

    await t.ok('Dan sets a new password', () => users.confirmPasswordReset(token, 'new-pass-456', 'new-pass-456'));
    await t.fails('the reset token is used up', 400, () => users.confirmPasswordReset(token, 'new-pass-789', 'new-pass-789'));
    await t.fails('his older auth token is revoked', 401, () => asDan.collection('ae_reset').authRefresh());
    await t.fails('the old password is refused', 400, () =>
      t.client().collection('ae_reset').authWithPassword('dan@example.com', PASSWORD),
    );
    await signIn(t, 'ae_reset', 'dan@example.com', 'new-pass-456', 'Dan signs in with the new password');
    await t.ok('the reset verified him', () => t.pb.collection('ae_reset').getOne(dan.id), { pick: (r) => r.verified });
    await t.fails('the verification token died with the old key', 400, () =>
      users.confirmVerification(verification?.tokens['confirm-verification'] ?? ''),
    );
    await t.ok('Dan may ask again right after a reset', () => users.requestPasswordReset('dan@example.com'));
    await mail(t, 'the next reset mail', 'dan@example.com', 'Reset');

    await t.ok('a superuser may ask for a reset', () => t.anon.collection('_superusers').requestPasswordReset(t.email));
    await mail(t, 'the superuser reset mail', t.email, 'Reset');
  },

  async 'auth-email-change'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_change');
    await authCollection(t, 'ae_change_other');
    const fay = await user(t, 'ae_change', 'fay@example.com');
    await user(t, 'ae_change', 'gus@example.com');
    await user(t, 'ae_change_other', 'hal@example.com');
    const users = t.anon.collection('ae_change');

    await t.fails('a guest may not ask', 401, () => users.requestEmailChange('fay.new@example.com'));
    const asHal = await signIn(t, 'ae_change_other', 'hal@example.com');
    await t.fails('a user of another collection may not ask', 403, () =>
      asHal.collection('ae_change').requestEmailChange('fay.new@example.com'),
    );
    await t.fails('a superuser on users', 403, () => t.pb.collection('ae_change').requestEmailChange('x@example.com'));
    await t.fails('a superuser on superusers', 400, () => t.pb.collection('_superusers').requestEmailChange('x@example.com'));
    await t.fails('an unknown collection', 404, () => asHal.collection('ae_nope').requestEmailChange('x@example.com'));

    const asFay = await signIn(t, 'ae_change', 'fay@example.com');
    const fayToken = asFay.authStore.token;
    const mine = asFay.collection('ae_change');
    await t.fails('no new email', 400, () => mine.requestEmailChange(''));
    await t.fails('not an email', 400, () => mine.requestEmailChange('fay'));
    await t.fails('the same email', 400, () => mine.requestEmailChange('fay@example.com'));
    await t.fails('an email already in use', 400, () => mine.requestEmailChange('gus@example.com'));
    await t.raw('a new email that is a number', 400, '/api/collections/ae_change/request-email-change', post('', { newEmail: 5 }, { Authorization: fayToken }), {
      auth: false,
    });

    await t.ok('Fay asks to change her email', () => mine.requestEmailChange('fay.new@example.com'));
    const found = await mail(t, 'the mail goes to the new address', 'fay.new@example.com', 'Confirm');
    const token = found?.tokens['confirm-email-change'];
    if (!token) throw new Error('no email change token in the mail');
    noteClaims(t, 'the email change token', token, fay, 1800);
    await noMail(t, 'nothing goes to the old address', 'fay@example.com', 0.5);
    await t.ok('Fay asks for another address too', () => mine.requestEmailChange('fay.taken@example.com'));
    const taken = await mail(t, 'the second change mail', 'fay.taken@example.com', 'Confirm');
    await user(t, 'ae_change', 'fay.taken@example.com');

    await t.ok('Hal asks to change his email', () => asHal.collection('ae_change_other').requestEmailChange('hal.new@example.com'));
    const hals = await mail(t, 'the change mail of Hal', 'hal.new@example.com', 'Confirm');

    await t.fails('confirm with nothing', 400, () => users.confirmEmailChange('', ''));
    await t.fails('a token that is none, with a password', 400, () => users.confirmEmailChange('nope', PASSWORD));
    await t.fails('a tampered token', 400, () => users.confirmEmailChange(tampered(token), PASSWORD));
    await t.fails('a token of another collection', 400, () =>
      users.confirmEmailChange(hals?.tokens['confirm-email-change'] ?? '', PASSWORD),
    );
    await t.fails('the wrong password', 400, () => users.confirmEmailChange(token, 'wrong-pass-000'));
    await t.fails('a password too long', 400, () => users.confirmEmailChange(token, 'p'.repeat(101)));
    await t.fails('a new address taken since', 400, () =>
      users.confirmEmailChange(taken?.tokens['confirm-email-change'] ?? '', PASSWORD),
    );
    await t.fails('confirm on superusers', 400, () => t.anon.collection('_superusers').confirmEmailChange(token, PASSWORD));

    await t.ok('Fay confirms while signed in', () => mine.confirmEmailChange(token, PASSWORD));
    t.note('the SDK signs her out', { token: asFay.authStore.token, record: asFay.authStore.record });
    const old = t.client();
    old.authStore.save(fayToken, null);
    await t.fails('her older auth token is revoked', 401, () => old.collection('ae_change').authRefresh());
    await t.fails('the old address no longer signs in', 400, () =>
      t.client().collection('ae_change').authWithPassword('fay@example.com', PASSWORD),
    );
    await signIn(t, 'ae_change', 'fay.new@example.com');
    await t.ok('the new address is hers, verified', () => t.pb.collection('ae_change').getOne(fay.id), {
      pick: (r) => [r.email, r.verified],
    });
    await t.fails('the token is used up', 400, () => users.confirmEmailChange(token, PASSWORD));
  },

  async 'auth-email-expired-tokens'(t) {
    await mailSetup(t);
    const short = { duration: 10 };
    await authCollection(t, 'ae_exp', { verificationToken: short, passwordResetToken: short, emailChangeToken: short });
    await user(t, 'ae_exp', 'ivy@example.com');
    const users = t.anon.collection('ae_exp');
    const asIvy = await signIn(t, 'ae_exp', 'ivy@example.com');
    await t.ok('Ivy asks for a verification mail', () => users.requestVerification('ivy@example.com'));
    await t.ok('Ivy asks for a reset', () => users.requestPasswordReset('ivy@example.com'));
    await t.ok('Ivy asks to change her email', () => asIvy.collection('ae_exp').requestEmailChange('ivy.new@example.com'));
    const verify = await mail(t, 'the verification mail', 'ivy@example.com', 'Verify');
    const reset = await mail(t, 'the reset mail', 'ivy@example.com', 'Reset');
    const change = await mail(t, 'the change mail', 'ivy.new@example.com', 'Confirm');
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    await t.fails('an expired verification token', 400, () => users.confirmVerification(verify?.tokens['confirm-verification'] ?? ''));
    await t.fails('an expired reset token', 400, () =>
      users.confirmPasswordReset(reset?.tokens['confirm-password-reset'] ?? '', 'new-pass-456', 'new-pass-456'),
    );
    await t.fails('an expired email change token', 400, () =>
      users.confirmEmailChange(change?.tokens['confirm-email-change'] ?? '', PASSWORD),
    );
  },

  async 'auth-email-rate-limits'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_rl');
    await user(t, 'ae_rl', 'jo@example.com');
    const users = t.anon.collection('ae_rl');
    await t.ok('limit the email routes', () =>
      t.pb.settings.update({
        rateLimits: {
          enabled: true,
          rules: [
            { label: 'ae_rl:requestPasswordReset', maxRequests: 1, duration: 600 },
            { label: '*:requestVerification', maxRequests: 1, duration: 600 },
            { label: 'ae_rl:confirmPasswordReset', maxRequests: 1, duration: 600, audience: '@guest' },
          ],
        },
      }),
      { pick: (s) => s.rateLimits },
    );
    await t.ok('a first reset request', () => users.requestPasswordReset('jo@example.com'));
    await t.fails('the second is refused', 429, () => users.requestPasswordReset('nobody@example.com'));
    await t.ok('a first verification request', () => users.requestVerification('nobody@example.com'));
    await t.fails('the second verification request is refused', 429, () => users.requestVerification('jo@example.com'));
    await t.fails('a first bad confirm', 400, () => users.confirmPasswordReset('nope', 'new-pass-456', 'new-pass-456'));
    await t.fails('the second confirm is refused', 429, () => users.confirmPasswordReset('nope', 'new-pass-456', 'new-pass-456'));
    await t.ok('a superuser is never limited', () => t.pb.collection('ae_rl').requestPasswordReset('jo@example.com'));
    await t.ok('turn the limits off', () => t.pb.settings.update({ rateLimits: { enabled: false, rules: [] } }), {
      pick: (s) => s.rateLimits,
    });
  },

  async 'auth-email-test-email'(t) {
    await mailSetup(t);
    await t.ok('a collection with its own template', () =>
      t.pb.collections.create({
        name: 'ae_tpl',
        type: 'auth',
        fields: [
          { name: 'name', type: 'text' },
          { name: 'age', type: 'number' },
          { name: 'flag', type: 'bool' },
          { name: 'born', type: 'date' },
          { name: 'tags', type: 'select', maxSelect: 2, values: ['a', 'b'] },
          { name: 'meta', type: 'json' },
          { name: 'secret', type: 'text', hidden: true },
        ],
        verificationTemplate: {
          subject: 'Hi {RECORD:name} from {APP_NAME}',
          body: '<p>{RECORD:id}|{RECORD:email}|{RECORD:name}|{RECORD:age}|{RECORD:flag}|{RECORD:born}|{RECORD:tags}|{RECORD:meta}|{RECORD:verified}|{RECORD:emailVisibility}|{RECORD:created}|{RECORD:secret}|{RECORD:tokenKey}|{RECORD:password}</p><a href="{APP_URL}/_/#/auth/confirm-verification/{TOKEN}">go</a>',
        },
      }),
      { pick: (c) => c.name },
    );
    await collection(t, 'ae_tpl_base', [{ name: 'title', type: 'text' }]);
    await user(t, 'users', 'kim@example.com');
    const asKim = await signIn(t, 'users', 'kim@example.com');

    await t.fails('a guest may not', 401, () => t.anon.settings.testEmail('users', 'x@example.com', 'verification'));
    await t.fails('a user may not', 403, () => asKim.settings.testEmail('users', 'x@example.com', 'verification'));
    await t.raw('nothing', 400, '/api/settings/test/email', post('', {}));
    await t.fails('everything wrong', 400, () => t.pb.settings.testEmail('ae_nope', 'nope', 'nope'));
    await t.fails('a base collection', 400, () => t.pb.settings.testEmail('ae_tpl_base', 'x@example.com', 'otp'));
    await t.raw('a template that is a number', 400, '/api/settings/test/email', post('', { template: 1, email: 'x@example.com' }));

    for (const template of ['verification', 'password-reset', 'email-change', 'otp', 'login-alert']) {
      const to = `test.${template}@example.com`;
      await t.ok(`send the ${template} test email`, () => t.pb.settings.testEmail('users', to, template));
      const found = await mail(t, `the ${template} test email`, to);
      if (template === 'login-alert' && found) {
        t.check('the alert names the test client', /TEST_IP TEST_USER_AGENT/.test(found.html));
      }
    }
    await t.ok('superusers by default', () => t.pb.settings.testEmail('', 'test.default@example.com', 'verification'));
    await mail(t, 'the default collection test email', 'test.default@example.com');
    await t.ok('a template with record placeholders', () =>
      t.pb.settings.testEmail('ae_tpl', 'test.tpl@example.com', 'verification'),
    );
    const custom = await mail(t, 'the stand-in record', 'test.tpl@example.com');
    if (custom) {
      const token = custom.tokens['confirm-verification'];
      const claims = claimsOf(token) ?? {};
      t.note('the stand-in token', { type: claims.type, id: claims.id, email: claims.email });
    }

    await t.ok('point SMTP at a closed port', () => t.pb.settings.update({ smtp: { port: 1 } }), {
      pick: (s) => s.smtp.port,
    });
    // the raw error is the mailer's own (Go's net error or ours): only its frame is compared
    const response = await fetch(new URL('/api/settings/test/email', t.url), post('', { template: 'otp', email: 'x@example.com' }, {
      Authorization: t.pb.authStore.token,
    }));
    const answer = await response.json();
    t.check('sending fails with 400', response.status === 400);
    t.note('the raw error is answered', {
      status: answer.status,
      data: answer.data,
      message: String(answer.message).split('Raw error:')[0],
      hasRawError: /Raw error: \n\S/.test(String(answer.message)),
    });
    await t.ok('SMTP back', () => t.pb.settings.update(t.mail.settings()), { pick: (s) => s.smtp.enabled });
  },

  async 'auth-email-login-alert'(t) {
    await mailSetup(t);
    await authCollection(t, 'ae_alerts');
    await user(t, 'ae_alerts', 'alert@example.com');
    /** Signs in with the given User-Agent (the fingerprint is the address plus the agent). */
    const from = async (agent, label) => {
      const client = t.client();
      client.beforeSend = (url, options) => {
        options.headers = { ...options.headers, 'User-Agent': agent };
        return { url, options };
      };
      await t.ok(label, () => client.collection('ae_alerts').authWithPassword('alert@example.com', PASSWORD), {
        pick: (r) => r.record.email,
      });
      return client;
    };
    const noAlert = async (label) => {
      const found = await t.mail.wait({ to: 'alert@example.com', timeout: 1.5 });
      t.check(label, found === null ? true : `a mail arrived: ${found.subject}`);
    };
    await from('agent-one', 'a first login');
    await noAlert('the first login is never alerted');
    await from('agent-one', 'again from the same place');
    await noAlert('a known place is not alerted');
    const known = await from('agent-two', 'a login from a new place');
    const mail = await t.mail.wait({ to: 'alert@example.com', subject: 'Login from a new location' });
    t.note('the alert', mail && {
      subject: mail.subject,
      namesTheAgent: mail.html.includes('agent-two'),
      namesTheAddress: /127\.0\.0\.1|::1/.test(mail.html),
    });
    await t.ok('the places remembered', () => t.pb.collection('_authOrigins').getFullList(), {
      pick: (items) => items.length,
    });
    await t.ok('a refresh is no login', () => known.collection('ae_alerts').authRefresh(), {
      pick: (r) => r.record.email,
    });
    await noAlert('no alert for a refresh');
    await t.ok('turn the alert off', () =>
      t.pb.collections.update('ae_alerts', { authAlert: { enabled: false } }), { pick: (c) => c.authAlert.enabled },
    );
    await from('agent-three', 'a new place with the alert off');
    await noAlert('nothing is sent with the alert off');
  },
};
