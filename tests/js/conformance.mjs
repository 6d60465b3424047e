// Runs one conformance scenario with the official PocketBase JS SDK against one or more
// PocketBase-compatible servers at once, and prints what each answered as a JSON trace.
//
//   node tests/js/conformance.mjs SCENARIO '{"targets": {"pocketbase": URL, "pocketfleet": URL},
//                                           "email": "...", "password": "...",
//                                           "mail"?: {TARGET: {"smtp": {host, port}, "url"}},
//                                           "oidc"?: {"url", "users": {...}}}'
//   node tests/js/conformance.mjs --list
//
// Prints {"TARGET": {"steps": [...], "surprises": [...], "aborted"?: "..."}, ...} and exits 0;
// the scenarios live in tests/js/conformance/*.mjs (see trace.mjs for how they record).
import authEmail from './conformance/auth_email.mjs';
import authOAuth2 from './conformance/auth_oauth2.mjs';
import authOtp from './conformance/auth_otp.mjs';
import authRecords from './conformance/auth_records.mjs';
import backups from './conformance/backups.mjs';
import batch from './conformance/batch.mjs';
import batchFiles from './conformance/batch_files.mjs';
import collections from './conformance/collections.mjs';
import collectionsMeta from './conformance/collections_meta.mjs';
import crons from './conformance/crons.mjs';
import errors from './conformance/errors.mjs';
import files from './conformance/files.mjs';
import filters from './conformance/filters.mjs';
import logs from './conformance/logs.mjs';
import migrations from './conformance/migrations.mjs';
import realtime from './conformance/realtime.mjs';
import records from './conformance/records.mjs';
import rules from './conformance/rules.mjs';
import settings from './conformance/settings.mjs';
import superusers from './conformance/superusers.mjs';
import viewFiles from './conformance/view_files.mjs';
import views from './conformance/views.mjs';
import { Trace } from './conformance/trace.mjs';
import { EventSource } from 'undici';

// The SDK's realtime service needs a global EventSource, which node 20 lacks: undici's.
globalThis.EventSource ??= EventSource;

const SCENARIO_TIMEOUT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 20_000;

// A server that never answers fails its request (status 0 in the trace), not the whole run.
const fetchWithoutTimeout = globalThis.fetch;
globalThis.fetch = (url, init = {}) =>
  fetchWithoutTimeout(url, { ...init, signal: init.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS) });

function registry() {
  const all = {};
  for (const group of [collections, collectionsMeta, records, authRecords, batch, filters, rules, settings, superusers, errors, authOtp, authEmail, authOAuth2, realtime, files, logs, crons, batchFiles, viewFiles, migrations, backups, views]) {
    for (const [name, scenario] of Object.entries(group)) {
      if (name in all) throw new Error(`scenario defined twice: ${name}`);
      all[name] = scenario;
    }
  }
  return all;
}

async function runOne(scenario, target) {
  const trace = new Trace(target);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('scenario timed out')), SCENARIO_TIMEOUT_MS);
  });
  try {
    await Promise.race([scenario(trace), timeout]);
  } catch (err) {
    // The scenario could not go on, e.g. a step it depends on failed: the trace ends here.
    trace.aborted = String(err?.message ?? err);
  } finally {
    clearTimeout(timer);
  }
  return { ...trace.toJSON(), ...(trace.aborted ? { aborted: trace.aborted } : {}) };
}

async function main(argv) {
  const scenarios = registry();
  if (argv[0] === '--list') return Object.keys(scenarios);
  const [name, config] = argv;
  const scenario = scenarios[name];
  if (!scenario || !config) {
    throw new Error(`usage: conformance.mjs SCENARIO CONFIG_JSON | --list (unknown: ${name})`);
  }
  const { targets, email, password, mail, oidc } = JSON.parse(config);
  const names = Object.keys(targets);
  const traces = await Promise.all(
    names.map((target) => runOne(scenario, { url: targets[target], email, password, mail: mail?.[target], oidc })),
  );
  return Object.fromEntries(names.map((target, i) => [target, traces[i]]));
}

try {
  // exit once written: a pipe is written asynchronously, an early exit cuts a long trace at 64 KiB
  process.stdout.write(`${JSON.stringify(await main(process.argv.slice(2)))}\n`, () => process.exit(0));
} catch (err) {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exit(1);
}
