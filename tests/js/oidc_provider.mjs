// A real OpenID Connect provider on loopback for the tests: panva's `oidc-provider` (the
// certified Node.js implementation) with one confidential client, one user, and its own small
// login and consent pages that a test drives over HTTP (tests/support/oidc.py does it with httpx).
//
//   node oidc_provider.mjs '{"port": 9100, "clientId": "pf-client", "clientSecret": "s3cret",
//                            "redirectUris": ["http://127.0.0.1/api/oauth2-redirect"],
//                            "anyLoopbackPort": true,
//                            "login": "alice", "password": "alice-pass",
//                            "claims": {"sub": "u1", "email": "alice@example.com", ...}}'
//
// The issuer is http://127.0.0.1:PORT; discovery at /.well-known/openid-configuration. What the
// provider itself enforces (and the tests rely on): an authorization code works once (a second
// exchange answers `invalid_grant` "authorization code already consumed" and revokes the tokens
// of the first), PKCE is checked whenever the authorization request carried a challenge, and
// redirect URIs must be registered ones. With `anyLoopbackPort` the client is registered as a
// native application, so, per RFC 8252 §7.3, a registered http://127.0.0.1/PATH matches that
// path on any port (both engines of a conformance test can then share one provider).
//
// Pages (plain HTML forms, one `id` each, so a test can find them without a browser):
//   GET  /interaction/:uid          the login form (id "login") or consent form (id "consent"),
//                                   each beside a deny form (id "deny")
//   POST /interaction/:uid/login    login + password; a wrong pair shows the login form again
//   POST /interaction/:uid/confirm  grants what was asked for
//   POST /interaction/:uid/abort    denies: the client gets error=access_denied
//   GET  /avatar.png                a 1×1 PNG (the user's `picture` claim points here)
// Every grant, token and authorization error is logged to stderr as one JSON line.

import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const port = Number(config.port);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node oidc_provider.mjs \'{"port": N, "clientId": ..., ...}\'');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const login = config.login ?? 'alice';
const password = config.password ?? 'alice-password';
const claims = {
  sub: 'oidc-user-1',
  email: 'alice@example.com',
  email_verified: true,
  name: 'Alice Example',
  preferred_username: 'alice',
  picture: `${issuer}/avatar.png`,
  ...(config.claims ?? {}),
};

const AVATAR = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==',
  'base64',
);

// A fresh signing key per run (no development keys, no warning about them).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.clientId ?? 'pocketfleet-test',
      client_secret: config.clientSecret ?? 'pocketfleet-test-secret',
      redirect_uris: config.redirectUris ?? ['http://127.0.0.1/api/oauth2-redirect'],
      application_type: config.anyLoopbackPort ? 'native' : 'web',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['oidc-provider-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'picture'],
  },
  features: { devInteractions: { enabled: false } },
  // Seconds; a code lives a minute, as the provider's default.
  ttl: { AuthorizationCode: 60, AccessToken: 3600, IdToken: 3600, Grant: 3600, Interaction: 600,
    Session: 3600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    if (sub !== claims.sub) return undefined;
    return { accountId: sub, async claims() { return { ...claims }; } };
  },
});
// Loopback only, plain http: the provider sees what the client sent.
provider.proxy = false;

const log = (event, fields) => process.stderr.write(`${JSON.stringify({ event, ...fields })}\n`);
for (const event of ['grant.success', 'grant.error', 'authorization.error', 'server_error',
  'userinfo.error', 'grant.revoked']) {
  provider.on(event, (ctx, err) => {
    const error = err instanceof Error
      ? { error: err.message, description: err.error_description, detail: err.error_detail }
      : {};
    log(event, { path: ctx?.path, ...error });
  });
}

const escape = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function denyForm(uid) {
  return `<form id="deny" method="post" action="/interaction/${escape(uid)}/abort">`
    + '<button type="submit">Cancel</button></form>';
}

function loginPage(uid, clientId, error) {
  return page(`Sign in to ${clientId}`,
    (error ? `<p class="error">${escape(error)}</p>` : '')
    + `<form id="login" method="post" action="/interaction/${escape(uid)}/login">`
    + '<input name="login" autocomplete="username">'
    + '<input name="password" type="password" autocomplete="current-password">'
    + '<button type="submit">Sign in</button></form>'
    + denyForm(uid));
}

function consentPage(uid, clientId, scopes) {
  return page(`Authorize ${clientId}`,
    `<p>${escape(clientId)} asks for: ${escape(scopes.join(' '))}</p>`
    + `<form id="consent" method="post" action="/interaction/${escape(uid)}/confirm">`
    + '<button type="submit">Allow</button></form>'
    + denyForm(uid));
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function finish(ctx, result, mergeWithLastSubmission) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

async function grantConsent(details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const saved = await grant.save();
  return grantId ? {} : { grantId: saved };
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/avatar.png') {
    ctx.type = 'image/png';
    ctx.body = AVATAR;
    return;
  }
  const match = /^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
  if (!match) {
    await next();
    return;
  }
  ctx.set('cache-control', 'no-store');
  const [, uid, action] = match;
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Interaction expired', `<p>${escape(err.message)}</p>`);
    return;
  }
  if (details.uid !== uid) {
    ctx.status = 400;
    ctx.body = page('Interaction mismatch', '<p>this is not the current interaction</p>');
    return;
  }
  const clientId = details.params.client_id;
  const prompt = details.prompt.name;

  if (ctx.method === 'GET' && action === undefined) {
    ctx.type = 'html';
    ctx.body = prompt === 'login'
      ? loginPage(uid, clientId)
      : consentPage(uid, clientId, String(details.params.scope ?? '').split(' '));
    return;
  }
  if (ctx.method !== 'POST') {
    ctx.status = 405;
    return;
  }
  const form = await readForm(ctx.req);
  if (action === 'abort') {
    await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
  } else if (action === 'login' && prompt === 'login') {
    if (form.get('login') !== login || form.get('password') !== password) {
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = loginPage(uid, clientId, 'Invalid login or password.');
      return;
    }
    await finish(ctx, { login: { accountId: claims.sub } }, false);
  } else if (action === 'confirm' && prompt === 'consent') {
    await finish(ctx, { consent: await grantConsent(details) }, true);
  } else {
    ctx.status = 400;
    ctx.body = page('Wrong step', `<p>the interaction is at "${escape(prompt)}"</p>`);
  }
});

const server = provider.listen(port, '127.0.0.1', () => log('listening', { issuer }));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
