// A real OpenID Connect provider (node `oidc-provider`) for Jishi's tests and demo.
//
// Configured by one JSON document in the environment variable JISHI_OIDC_CONFIG:
//   {"issuer": "http://127.0.0.1:PORT", "port": PORT, "host": "127.0.0.1",
//    "clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
//    "users": {"<login>": {"password": "...", "claims": {"name": "...", "email": "..."}}}}
// The login form is the provider's own (a password is checked against `users`); consent is
// granted without a prompt (a university's unified login does not ask either). Prints
// "ready <issuer>" on stdout once it listens.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.JISHI_OIDC_CONFIG || '{}');
const users = cfg.users || {};

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const provider = new Provider(cfg.issuer, {
  clients: (cfg.clients || []).map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, preferred_username: id, ...(user.claims || {}) }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email');
    grant.addOIDCClaims(['name', 'preferred_username', 'email', 'email_verified']);
    await grant.save();
    return grant;
  },
});

function page(uid, error) {
  return `<!doctype html><html lang="zh"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>统一身份认证 (test provider)</title></head><body>
<h1>统一身份认证</h1>${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>用户名 <input name="login" id="login" autocomplete="username" required></label>
<label>密码 <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="submit">登录</button></form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(req.url.split('?')[0]);
  if (!m) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== m[1]) throw new Error('interaction mismatch');
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(page(details.uid));
    }
    if (req.method === 'POST' && m[2]) {
      const form = await readForm(req);
      const login = form.get('login') || '';
      const user = users[login];
      if (!user || user.password !== form.get('password')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return res.end(page(details.uid, '用户名或密码错误 / wrong login or password'));
      }
      return await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    }
    res.writeHead(405);
    return res.end();
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
    return res.end(`interaction failed: ${err.message}`);
  }
});

server.listen(cfg.port, cfg.host || '127.0.0.1', () => {
  process.stdout.write(`ready ${cfg.issuer}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
