// Settings scenarios: GET/PATCH /api/settings (secrets kept, never shown; validation as
// PocketBase's) and the rate limiter that `settings.rateLimits` drives. Each scenario changes
// instance-wide settings, so all of them run on engines of their own (ISOLATED).
import { collection } from './records.mjs';

const smtp = { enabled: false, host: 'smtp.example.org', port: 2525, username: 'mailer', password: 'smtp-secret-1' };

export default {
  async 'settings-read-write'(t) {
    await t.fails('settings without auth', 401, () => t.anon.settings.getAll());
    await t.login();
    await t.ok('the settings of a fresh instance', () => t.pb.settings.getAll());
    await t.ok('set smtp with a password', () => t.pb.settings.update({ smtp }), { pick: (s) => s.smtp });
    await t.ok('the password is never shown', () => t.pb.settings.getAll(), { pick: (s) => s.smtp });
    await t.ok('a change of another member', () => t.pb.settings.update({ meta: { appName: 'Conformance' } }), {
      pick: (s) => [s.meta, s.smtp],
    });
    await t.ok('lists are replaced, not merged', () =>
      t.pb.settings.update({ rateLimits: { rules: [{ label: '/api/', maxRequests: 100, duration: 10 }] } }),
      { pick: (s) => s.rateLimits },
    );
    await t.ok('unknown members are ignored', () => t.pb.settings.update({ nope: 1, meta: { nope: 2 } }), {
      pick: (s) => s.meta,
    });
    await t.fails('a member of the wrong type', 400, () => t.pb.settings.update({ batch: { enabled: 'yes' } }));
    await t.fails('a fractional integer', 400, () => t.pb.settings.update({ batch: { maxRequests: 1.5 } }));
    await t.fails('smtp on without a host', 400, () =>
      t.pb.settings.update({ smtp: { enabled: true, host: '', port: 0 } }),
    );
    await t.fails('meta without an app name or a valid url', 400, () =>
      t.pb.settings.update({ meta: { appName: '', appURL: 'not a url', senderAddress: 'nobody' } }),
    );
    await t.fails('an accent colour that is not one', 400, () =>
      t.pb.settings.update({ meta: { accentColor: 'red' } }),
    );
    await t.fails('s3 on without its members', 400, () => t.pb.settings.update({ s3: { enabled: true } }));
    await t.fails('a bad backups cron', 400, () => t.pb.settings.update({ backups: { cron: 'every day' } }));
    await t.fails('batch on without limits', 400, () =>
      t.pb.settings.update({ batch: { enabled: true, maxRequests: 0, timeout: 0, maxBodySize: -1 } }),
    );
    await t.fails('rate limit rules that conflict', 400, () =>
      t.pb.settings.update({
        rateLimits: {
          rules: [
            { label: '/api/', maxRequests: 1, duration: 1 },
            { label: '/api/', maxRequests: 2, duration: 1 },
          ],
        },
      }),
    );
    await t.fails('a rate limit rule that is not valid', 400, () =>
      t.pb.settings.update({
        rateLimits: { rules: [{ label: 'bad label!', maxRequests: 0, duration: -1, audience: 'x' }] },
      }),
    );
    await t.fails('an excluded address that is not one', 400, () =>
      t.pb.settings.update({ rateLimits: { excludedIPs: ['', 'nope', '10.0.0.0/8'] } }),
    );
    await t.fails('superuser addresses that are not', 400, () =>
      t.pb.settings.update({ superuserIPs: ['300.1.1.1'] }),
    );
    await t.ok('nothing of the refused changes was kept', () => t.pb.settings.getAll());
    await t.ok('an empty password clears it', () => t.pb.settings.update({ smtp: { password: '' } }), {
      pick: (s) => s.smtp,
    });
  },

  async 'settings-rate-limits'(t) {
    await t.login();
    await collection(t, 'rl_notes', [{ name: 'title', type: 'text' }], { listRule: '', viewRule: '', createRule: '' });
    await t.ok('turn on a list limit for guests', () =>
      t.pb.settings.update({
        rateLimits: {
          enabled: true,
          rules: [
            { label: 'rl_notes:list', maxRequests: 2, duration: 600, audience: '@guest' },
            { label: '*:create', maxRequests: 1, duration: 600 },
            { label: '/api/health', maxRequests: 1, duration: 600 },
          ],
        },
      }),
      { pick: (s) => s.rateLimits },
    );
    const guest = t.client();
    await t.ok('a first guest list', () => guest.collection('rl_notes').getList(1, 1));
    await t.ok('a second guest list', () => guest.collection('rl_notes').getList(1, 1));
    await t.fails('the third is refused', 429, () => guest.collection('rl_notes').getList(1, 1));
    await t.ok('a superuser is never limited', () => t.pb.collection('rl_notes').getList(1, 1));
    await t.ok('a first guest create', () => guest.collection('rl_notes').create({ title: 'one' }), {
      pick: (r) => r.title,
    });
    await t.fails('the second create is refused', 429, () => guest.collection('rl_notes').create({ title: 'two' }));
    await t.raw('a first health check', 200, '/api/health', {}, { auth: false });
    await t.raw('a second health check is refused', 429, '/api/health', {}, { auth: false });
    await t.ok('turn the limits off', () => t.pb.settings.update({ rateLimits: { enabled: false } }), {
      pick: (s) => s.rateLimits.enabled,
    });
    await t.ok('a guest list once they are off', () => guest.collection('rl_notes').getList(1, 1), {
      pick: (l) => l.totalItems,
    });
  },
};
