// Cron scenarios, through the SDK's CronService (`pb.crons.getFullList`, `pb.crons.run`): the
// jobs of a fresh instance (PocketBase's system jobs: ids, expressions and order), who may see
// and run them, and running each one now. Run on fresh engines (ISOLATED in harness terms: the
// list is instance-wide, and settings such as `backups.cron` would change it).
export default {
  async 'crons-list-run'(t) {
    await t.fails('guests may not list the jobs', 401, () => t.anon.crons.getFullList());
    await t.fails('guests may not run a job', 401, () => t.anon.crons.run('__pbOTPCleanup__'));

    await t.login();
    const email = 'crons-user@example.com';
    const password = 'crons-user-pass-1';
    await t.ok('a regular user', () =>
      t.pb.collection('users').create({ email, password, passwordConfirm: password }),
      { pick: (r) => r.email },
    );
    const user = t.client();
    await t.ok('the user signs in', () => user.collection('users').authWithPassword(email, password), {
      pick: (r) => r.record.email,
    });
    await t.fails('a user may not list the jobs', 403, () => user.crons.getFullList());
    await t.fails('a user may not run a job', 403, () => user.crons.run('__pbOTPCleanup__'));

    const jobs = await t.ok('the jobs of a fresh instance', () => t.pb.crons.getFullList());
    t.keep(...(jobs ?? []).map((job) => job.id)); // compared as they are, not as generated ids
    for (const job of jobs ?? []) {
      await t.ok(`run ${job.id} now`, () => t.pb.crons.run(job.id));
    }
    await t.fails('an unknown job', 404, () => t.pb.crons.run('nope'));
    await t.fails('an unknown job named like a system one', 404, () => t.pb.crons.run('__pbNope__'));
    await t.raw('the list, raw', 200, '/api/crons');
    await t.raw('a job is no resource of its own', 404, '/api/crons/__pbOTPCleanup__');
    await t.raw('running an unknown job, raw', 404, '/api/crons/nope', { method: 'POST' });
    await t.ok('the jobs after running them all', () => t.pb.crons.getFullList());
  },
};
