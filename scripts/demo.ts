/**
 * The local demo: a pipeline with an S3 prefix and two PostgreSQL tables, a restore point, a bad deploy that
 * damages all three, and the staged rollback that puts everything back — with the real CLI, the real state
 * machine definitions and handlers, moto for the AWS APIs, and PostgreSQL (the machine's, or an embedded one).
 *
 *   npm run demo
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { stringify } from 'yaml';
import { breakOrders, ordersManifest, seedOrders } from './demo-data.ts';
import { startMoto, startPostgres } from './local-services.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bold = (t: string) => (process.stdout.isTTY ? `\x1b[1m${t}\x1b[0m` : t);
const say = (t: string) => console.log(`\n${bold(`▸ ${t}`)}`);

async function main(): Promise<number> {
  say('starting local services');
  const moto = await startMoto(root);
  console.log(`  AWS APIs (moto): ${moto.endpoint}`);
  const postgres = await startPostgres();
  console.log(`  PostgreSQL: ${postgres.embedded ? 'embedded server (none was running)' : 'the server on 127.0.0.1:5432'}`);

  const env = {
    ...process.env,
    AWS_ENDPOINT_URL: moto.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'demo',
    AWS_SECRET_ACCESS_KEY: 'demo',
    ETL_ROLLBACK_LEDGER_TABLE: 'etl-rollback-demo-ledger',
    ETL_ROLLBACK_STATE_BUCKET: 'etl-rollback-demo-state',
  };
  Object.assign(process.env, env);

  const admin = new pg.Client({ connectionString: postgres.adminUrl });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS orders_demo WITH (FORCE)');
  await admin.query('CREATE DATABASE orders_demo');
  await admin.end();
  const databaseUrl = postgres.adminUrl.replace(/\/[^/]*$/, '/orders_demo');
  const sql = new pg.Client({ connectionString: databaseUrl });
  await sql.connect();
  const s3 = new S3Client({ forcePathStyle: true });
  const bucket = 'orders-lake';

  const dir = join(root, '.etl-rollback', 'demo');
  mkdirSync(dir, { recursive: true });
  const manifestPath = join(dir, 'orders.yaml');
  // With a recovery-time objective: the drill below is measured against it.
  writeFileSync(manifestPath, stringify({ ...ordersManifest({ pipeline: 'orders', bucket, databaseUrl }), rto: '15m' }));
  const manifest = relative(process.cwd(), manifestPath);

  const cli = (...args: string[]): number => {
    console.log(`\n$ etl-rollback ${args.join(' ')}`);
    const r = spawnSync(process.execPath, [join(root, 'bin', 'etl-rollback.mjs'), ...args], { stdio: 'inherit', env });
    return r.status ?? 1;
  };
  const snapshotOf = async () => ({
    staging: (await sql.query('SELECT md5(string_agg(t::text, \',\' ORDER BY id)) AS h FROM staging.orders t')).rows[0].h as string,
    mart: (await sql.query('SELECT md5(string_agg(t::text, \',\' ORDER BY day)) AS h FROM mart.daily_orders t')).rows[0].h as string,
  });

  try {
    say('seeding the lake bucket (4 order files) and the warehouse (500 staging rows, 5 mart rows)');
    await seedOrders({ s3, sql, bucket });
    const before = await snapshotOf();

    say('the manifest, checked and planned (offline)');
    if (cli('validate', manifest) !== 0) return 1;
    if (cli('plan', manifest, '--format', 'mermaid') !== 0) return 1;

    say('before the deploy: a restore point of every unit');
    if (cli('snapshot', manifest, '--deployment', 'd-42', '--local') !== 0) return 1;

    say('the deploy goes wrong');
    for (const line of await breakOrders({ s3, sql, bucket })) console.log(`  ${line}`);

    say('what a rollback would do, cost and take (dry run: nothing is changed; no history yet, so default throughput)');
    if (cli('rollback', manifest, '--deployment', 'd-42', '--dry-run', '--local') !== 0) return 1;

    say('the rollback: mart, then staging, then the raw files, each stage verified');
    if (cli('rollback', manifest, '--deployment', 'd-42', '--local', '--reason', 'bad numbers in the mart') !== 0) return 1;

    const after = await snapshotOf();
    const same = after.staging === before.staging && after.mart === before.mart;
    say(`independent check with SQL: staging and mart are ${same ? 'row-for-row as before the deploy ✓' : 'NOT as before ✗'}`);
    if (!same) return 1;

    say('the deploy goes wrong again; the dry run now estimates from the throughput the first rollback measured');
    for (const line of await breakOrders({ s3, sql, bucket })) console.log(`  ${line}`);
    if (cli('rollback', manifest, '--deployment', 'd-42', '--dry-run', '--local') !== 0) return 1;
    say('the second rollback: its report sets that estimate against what happened');
    if (cli('rollback', manifest, '--deployment', 'd-42', '--local', '--reason', 'the same bad numbers, again') !== 0) return 1;

    say('the audit trail: the runs as history lists them, and the last report as written (Markdown, beside the JSON)');
    if (cli('history', 'orders', '--local') !== 0) return 1;
    const reports = await s3.send(new ListObjectsV2Command({ Bucket: env.ETL_ROLLBACK_STATE_BUCKET, Prefix: 'reports/orders/' }));
    // Run names end with their start time, so the last key is the latest rollback.
    const markdownKey = reports.Contents?.map((o) => o.Key!).filter((k) => k.endsWith('.md') && k.includes('/rollback-')).sort().at(-1);
    if (!markdownKey) {
      console.error('  no Markdown report was written');
      return 1;
    }
    const markdown = await (await s3.send(new GetObjectCommand({ Bucket: env.ETL_ROLLBACK_STATE_BUCKET, Key: markdownKey }))).Body!.transformToString();
    console.log(`\n  s3://${env.ETL_ROLLBACK_STATE_BUCKET}/${markdownKey} (in AWS: the audit bucket, under Object Lock)\n`);
    console.log(markdown.replace(/^/gm, '  | '));

    say('a rollback drill: the same staged rollback into scratch targets, every gate run on them, production untouched');
    if (cli('drill', manifest, '--deployment', 'd-42', '--local', '--reason', 'weekly drill') !== 0) return 1;
    const drills = await s3.send(new ListObjectsV2Command({ Bucket: env.ETL_ROLLBACK_STATE_BUCKET, Prefix: 'reports/orders/' }));
    const drillKey = drills.Contents?.map((o) => o.Key!).filter((k) => k.endsWith('.md') && k.includes('/drill-')).sort().at(-1);
    if (drillKey) {
      const drillMarkdown = await (await s3.send(new GetObjectCommand({ Bucket: env.ETL_ROLLBACK_STATE_BUCKET, Key: drillKey }))).Body!.transformToString();
      console.log(`\n  s3://${env.ETL_ROLLBACK_STATE_BUCKET}/${drillKey}\n`);
      console.log(drillMarkdown.replace(/^/gm, '  | '));
    }
    const after2 = await snapshotOf();
    say(`independent check with SQL after the drill: staging and mart ${after2.staging === before.staging && after2.mart === before.mart ? 'unchanged ✓' : 'CHANGED ✗'}`);

    say('rolling back again changes nothing (idempotent)');
    if (cli('rollback', manifest, '--deployment', 'd-42', '--local') !== 0) return 1;
    say('done: the manifest is in .etl-rollback/demo/orders.yaml; see README.md for the commands');
    return 0;
  } finally {
    await sql.end();
    await moto.stop();
    await postgres.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
