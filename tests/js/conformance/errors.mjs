// Error scenarios: every error is {status, message, data}; validation errors carry {code,
// message} per field; what the SDK cannot send (malformed JSON, huge bodies, other routes and
// methods) goes through raw fetch.
import { collection } from './records.mjs';

const json = { 'Content-Type': 'application/json' };

export default {
  async 'errors-shape'(t) {
    await t.login();
    await collection(
      t,
      'ea_items',
      [
        { name: 'title', type: 'text', required: true, min: 3 },
        { name: 'n', type: 'number', max: 5 },
      ],
      { listRule: '', createRule: '' },
    );
    await t.fails('a validation error: per-field code and message', 400, () =>
      t.pb.collection('ea_items').create({ title: 'ab', n: 6 }),
    );
    await t.fails('a 404', 404, () => t.pb.collection('ea_items').getOne('missingmissing1'));
    await t.fails('a 403', 403, () => t.anon.collection('ea_items').getOne('missingmissing1'));
    await t.fails('a 401', 401, () => t.anon.collections.getList());
    await t.raw('the health check', 200, '/api/health', {}, { auth: false });
    await t.raw('HEAD of the health check', 200, '/api/health', { method: 'HEAD' }, { auth: false });
    await t.raw('an unknown API route', 404, '/api/nothing-here', {}, { auth: false });
    await t.raw('an unknown API route under collections', 404, '/api/collections/ea_items/nothing', {});
    await t.raw('a method the route does not have', 404, '/api/collections/ea_items/records', {
      method: 'PUT',
    });
  },

  async 'errors-malformed-bodies'(t) {
    await t.login();
    await collection(t, 'eb_items', [{ name: 'title', type: 'text' }], {
      listRule: '',
      createRule: '',
      updateRule: '',
    });
    const records = '/api/collections/eb_items/records';
    await t.raw('malformed JSON: record create', 400, records, {
      method: 'POST',
      headers: json,
      body: '{"title": ',
    });
    await t.raw('malformed JSON: collection create', 400, '/api/collections', {
      method: 'POST',
      headers: json,
      body: '{"name": "eb_bad",',
    });
    await t.raw(
      'malformed JSON: auth-with-password',
      400,
      '/api/collections/_superusers/auth-with-password',
      {
        method: 'POST',
        headers: json,
        body: '{"identity":',
      },
      { auth: false },
    );
    await t.raw('a JSON array instead of an object', 400, records, {
      method: 'POST',
      headers: json,
      body: '[1, 2]',
    });
    await t.raw('a JSON string instead of an object', 400, records, {
      method: 'POST',
      headers: json,
      body: '"title"',
    });
    await t.raw('wrong types: a number for a text field', 200, records, {
      method: 'POST',
      headers: json,
      body: '{"title": 12}',
    });
    await t.raw('an empty body', 200, records, { method: 'POST', headers: json, body: '' });
    await t.raw('form-urlencoded', 200, records, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'title=urlencoded',
    });
    await t.raw('text/plain JSON', 400, records, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain' },
      body: '{"title": "plain"}',
    });
    await t.ok('what was created', () =>
      t.pb.collection('eb_items').getFullList({ sort: '@rowid', fields: 'title' }),
    );
  },

  async 'errors-body-limit'(t) {
    await t.login();
    await collection(t, 'ec_items', [{ name: 'data', type: 'json', maxSize: 0 }], { createRule: '' });
    const records = '/api/collections/ec_items/records';
    const huge = JSON.stringify({ data: 'x'.repeat(33 * 1024 * 1024) });
    await t.raw(
      'a 33 MB JSON body: 413',
      413,
      records,
      { method: 'POST', headers: json, body: huge },
      { auth: false },
    );
    await t.raw('a 33 MB body to the collections API: 413', 413, '/api/collections', {
      method: 'POST',
      headers: json,
      body: huge,
    });
    await t.raw(
      'a JSON value over the field maxSize (1 MB default)',
      400,
      records,
      {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ data: 'x'.repeat(2 * 1024 * 1024) }),
      },
      { auth: false },
    );
    await t.ok('nothing was created', () => t.pb.collection('ec_items').getList(1, 1, { fields: 'id' }));
  },
};
