#!/usr/bin/env node
// Peer benchmark: @supabase/stripe-sync-engine backfilling one simulated Stripe account.
//
//   node run.cjs --base http://127.0.0.1:PORT --account acct_… \
//                --pg postgres://postgres@127.0.0.1:5432/DBNAME [--schema stripe]
//                [--types supported|all|customers,invoices,…] [--retries 5] [--reset]
//                [--no-auto-expand] [--verbose]
//
// --types supported (default): the types of the peer's `all` backfill whose list routes the
// simulator serves; `all` tries every type and records the 404s as skipped.
//
// The peer has no host or Connect option, so after constructing its StripeSync we replace its
// public `stripe` field with a stripe-node client aimed at the simulator, with the
// `Stripe-Account` header set. Its ESM build fails on `__dirname` (runMigrations), so this file is
// CommonJS and loads the CommonJS build through require.
//
// Prints one JSON line on stdout:
//   {"peer":"@supabase/stripe-sync-engine","version":…,"stripe_node":…,"wall_s":…,"objects":…,
//    "by_type":{…},"tables":{…},"skipped":{…}}
// `objects` is the sum of the counts the peer's sync methods return (objects listed and upserted);
// `rows` and `tables` are row counts of its tables afterwards (including child rows such as
// subscription_items and checkout_session_line_items). Exits non-zero with a message on failure.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { StripeSync, runMigrations } = require('@supabase/stripe-sync-engine');
const Stripe = require('stripe');
const pg = require('pg');

const PEER = '@supabase/stripe-sync-engine';

// The object types of the peer's `syncBackfill({ object: 'all' })`, in its order, with the method
// it calls for each. `all` awaits them one after another; each one pages through its list
// sequentially (stripe-node auto-pagination: one request in flight at a time).
const ALL_TYPES = [
  ['products', 'syncProducts'],
  ['prices', 'syncPrices'],
  ['plans', 'syncPlans'],
  ['customers', 'syncCustomers'],
  ['subscriptions', 'syncSubscriptions'],
  ['subscriptionSchedules', 'syncSubscriptionSchedules'],
  ['invoices', 'syncInvoices'],
  ['charges', 'syncCharges'],
  ['setupIntents', 'syncSetupIntents'],
  ['paymentMethods', 'syncPaymentMethods'],
  ['paymentIntents', 'syncPaymentIntents'],
  ['taxIds', 'syncTaxIds'],
  ['creditNotes', 'syncCreditNotes'],
  ['disputes', 'syncDisputes'],
  ['earlyFraudWarnings', 'syncEarlyFraudWarnings'],
  ['refunds', 'syncRefunds'],
  ['checkoutSessions', 'syncCheckoutSessions'],
];

// The types whose list routes the simulator serves (docs/simulator.md). The others answer
// `404 Unrecognized request URL` there (the simulated accounts hold none of them).
const SIM_SUPPORTED = new Set([
  'products',
  'prices',
  'customers',
  'subscriptions',
  'invoices',
  'charges',
  'paymentIntents',
  'refunds',
  'checkoutSessions',
]);

function usage(msg) {
  if (msg) process.stderr.write(`run.cjs: ${msg}\n`);
  process.stderr.write(
    'usage: node run.cjs --base http://127.0.0.1:PORT --account acct_… --pg postgres://…/DB ' +
      '[--schema stripe] [--types supported|all|t1,t2] [--retries N] [--reset] [--no-auto-expand] [--verbose]\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { schema: 'stripe', types: 'supported', retries: 5, reset: false, verbose: false, autoExpand: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--base': opts.base = next(); break;
      case '--account': opts.account = next(); break;
      case '--pg': opts.pg = next(); break;
      case '--schema': opts.schema = next(); break;
      case '--types': opts.types = next(); break;
      case '--retries': opts.retries = Number(next()); break;
      case '--reset': opts.reset = true; break;
      case '--no-auto-expand': opts.autoExpand = false; break;
      case '--verbose': opts.verbose = true; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!opts.base || !opts.account || !opts.pg) usage('--base, --account and --pg are required');
  if (!/^acct_\w+$/.test(opts.account)) usage(`--account must look like acct_…, not ${opts.account}`);
  if (!/^[a-z_][a-z0-9_]*$/.test(opts.schema)) usage(`--schema must be a plain identifier`);
  if (!Number.isInteger(opts.retries) || opts.retries < 0) usage('--retries must be an integer ≥ 0');
  return opts;
}

function selectTypes(spec) {
  if (spec === 'all') return ALL_TYPES;
  if (spec === 'supported') return ALL_TYPES.filter(([t]) => SIM_SUPPORTED.has(t));
  const wanted = new Set(spec.split(',').map((s) => s.trim()).filter(Boolean));
  const known = new Set(ALL_TYPES.map(([t]) => t));
  for (const t of wanted) if (!known.has(t)) usage(`unknown type ${t} (known: ${[...known].join(',')})`);
  return ALL_TYPES.filter(([t]) => wanted.has(t));
}

// A minimal pino-shaped logger: the peer's runMigrations swallows its errors and only logs them.
function makeLogger(verbose, errors) {
  const write = (level) => (a, b) => {
    const msg = typeof a === 'string' ? a : b ?? '';
    const obj = typeof a === 'string' ? undefined : a;
    if (level === 'error') errors.push(obj instanceof Error ? obj : new Error(`${msg} ${JSON.stringify(obj ?? '')}`));
    if (verbose || level === 'error') {
      const extra = obj instanceof Error ? ` ${obj.stack}` : obj ? ` ${JSON.stringify(obj)}` : '';
      process.stderr.write(`[peer ${level}] ${msg}${extra}\n`);
    }
  };
  const logger = {
    trace: () => {}, debug: write('debug'), info: write('info'), warn: write('warn'),
    error: write('error'), fatal: write('error'),
  };
  logger.child = () => logger;
  return logger;
}

function readVersion(pkgMain, name) {
  // Walk up from the resolved entry point to the package's package.json (its exports map hides it).
  let dir = path.dirname(pkgMain);
  while (dir !== path.dirname(dir)) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p)) {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8'));
      if (pkg.name === name) return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const base = new URL(opts.base);
  if (base.protocol !== 'http:' && base.protocol !== 'https:') usage('--base must be http(s)://host:port');
  const types = selectTypes(opts.types);
  const version = readVersion(require.resolve(PEER), PEER);
  const stripeVersion = readVersion(require.resolve('stripe'), 'stripe');

  // A fresh schema: refuse to reuse one that exists unless --reset.
  const admin = new pg.Client({ connectionString: opts.pg, connectionTimeoutMillis: 10000 });
  await admin.connect();
  try {
    const { rows } = await admin.query('select 1 from pg_namespace where nspname = $1', [opts.schema]);
    if (rows.length > 0) {
      if (!opts.reset) throw new Error(`schema "${opts.schema}" already exists in ${opts.pg}; pass --reset to drop it`);
      await admin.query(`drop schema "${opts.schema}" cascade`);
    }
  } finally {
    await admin.end();
  }

  const errors = [];
  const logger = makeLogger(opts.verbose, errors);
  const migStarted = process.hrtime.bigint();
  await runMigrations({ databaseUrl: opts.pg, schema: opts.schema, logger });
  if (errors.length > 0) throw new Error(`the peer's migrations failed: ${errors[0].message}`);
  const migrateS = Number(process.hrtime.bigint() - migStarted) / 1e9;

  const sync = new StripeSync({
    poolConfig: { connectionString: opts.pg, max: 10 },
    schema: opts.schema,
    stripeSecretKey: 'sk_test_peer',
    stripeWebhookSecret: 'whsec_unused',
    // Fetch the rest of embedded lists (invoice lines, subscription items, charge refunds) when
    // has_more, as Tributary's sync does; the peer's default is false (first 10 only).
    autoExpandLists: opts.autoExpand,
    logger,
  });
  // The peer builds its own stripe-node client for api.stripe.com; aim it at the simulator and the
  // connected account instead (stripe-node's own retries handle 429 + Stripe-Should-Retry).
  sync.stripe = new Stripe('sk_test_peer', {
    host: base.hostname,
    port: Number(base.port || (base.protocol === 'https:' ? 443 : 80)),
    protocol: base.protocol.replace(':', ''),
    stripeAccount: opts.account,
    maxNetworkRetries: opts.retries,
    timeout: 30000,
    appInfo: { name: 'Stripe Postgres Sync' },
  });

  const byType = {};
  const secondsByType = {};
  const skipped = {};
  const started = process.hrtime.bigint();
  let wallS;
  try {
    for (const [type, method] of types) {
      const t0 = process.hrtime.bigint();
      try {
        const res = await sync[method]({ object: 'all' });
        byType[type] = res.synced;
      } catch (err) {
        const msg = err && err.message ? err.message : String(err);
        if (/Unrecognized request URL/.test(msg)) {
          skipped[type] = `simulator has no route: ${msg.split('.')[0]}`;
          continue;
        }
        const status = err && err.statusCode ? ` (HTTP ${err.statusCode}${err.code ? `, ${err.code}` : ''})` : '';
        throw new Error(`${PEER} ${method} failed${status}: ${msg}`);
      }
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      secondsByType[type] = Number(s.toFixed(3));
      if (opts.verbose) process.stderr.write(`[peer] ${type}: ${byType[type]} in ${s.toFixed(2)} s\n`);
    }
  } finally {
    wallS = Number(process.hrtime.bigint() - started) / 1e9;
  }
  for (const [type] of ALL_TYPES) {
    if (!types.some(([t]) => t === type) && !(type in skipped)) skipped[type] = 'not selected';
  }

  const tables = {};
  const { rows } = await sync.postgresClient.query(
    `select table_name from information_schema.tables where table_schema = '${opts.schema}' and table_type = 'BASE TABLE' and table_name <> 'migrations' order by 1`
  );
  for (const { table_name: t } of rows) {
    const r = await sync.postgresClient.query(`select count(*)::int as n from "${opts.schema}"."${t}"`);
    if (r.rows[0].n > 0) tables[t] = r.rows[0].n;
  }
  await sync.close();

  const objects = Object.values(byType).reduce((a, b) => a + b, 0);
  const rowsTotal = Object.values(tables).reduce((a, b) => a + b, 0);
  process.stdout.write(
    JSON.stringify({
      peer: PEER,
      version,
      stripe_node: stripeVersion,
      wall_s: Number(wallS.toFixed(3)),
      migrate_s: Number(migrateS.toFixed(3)),
      objects,
      rows: rowsTotal,
      by_type: byType,
      seconds_by_type: secondsByType,
      tables,
      skipped,
    }) + '\n'
  );
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`run.cjs: FAILED: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  }
);
