import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BatchCreatePartitionCommand,
  CreateDatabaseCommand,
  CreateTableCommand,
  GetPartitionsCommand,
  GetTableCommand,
  GlueClient,
  UpdatePartitionCommand,
  UpdateTableCommand,
  type PartitionInput,
} from '@aws-sdk/client-glue';
import { CreateBucketCommand, DeleteObjectCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { canonicalDefinition, storedPartition, storedTable } from '../../core/adapters/glue/document.ts';
import type { RunReport } from '../../core/report/report.ts';
import { liveEtags, testS3, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

const s3 = testS3();
const glue = new GlueClient({});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

function unitReport(report: RunReport, unitId: string) {
  for (const stage of report.stages) for (const u of stage.units) if (u.unitId === unitId) return u;
  throw new Error(`unit ${unitId} not in report`);
}

describe('s3-prefix + glue-table pair: snapshot → bad deploy → staged rollback through the local state machines (CLI, handlers, moto)', () => {
  const pipeline = uniqueName('clicks');
  const bucket = uniqueName('clicks-lake');
  const database = uniqueName('lake').replace(/-/g, '_');
  const table = 'events';
  const deployment = 'd-7';
  let manifestPath = '';
  let before: { files: Record<string, string>; definition: string; partitions: Record<string, string> };

  const sd = (location: string, extra: { Name: string; Type: string }[] = []) => ({
    Columns: [{ Name: 'user_id', Type: 'string' }, { Name: 'event', Type: 'string' }, ...extra],
    Location: location,
    InputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
    SerdeInfo: { SerializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe' },
  });
  const part = (dt: string, dir = 'events'): PartitionInput => ({ Values: [dt], StorageDescriptor: sd(`s3://${bucket}/${dir}/dt=${dt}/`) });

  async function catalog() {
    const t = await glue.send(new GetTableCommand({ DatabaseName: database, Name: table }));
    const ps = await glue.send(new GetPartitionsCommand({ DatabaseName: database, TableName: table }));
    return {
      definition: canonicalDefinition(storedTable(t.Table!)),
      partitions: Object.fromEntries((ps.Partitions ?? []).map((p) => [p.Values!.join('/'), canonicalDefinition(storedPartition(p))])),
    };
  }

  beforeAll(async () => {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    for (const dt of ['2026-11-01', '2026-11-02', '2026-11-03']) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `events/dt=${dt}/part-0.parquet`, Body: `events of ${dt}` }));
    }
    await glue.send(new CreateDatabaseCommand({ DatabaseInput: { Name: database } }));
    await glue.send(
      new CreateTableCommand({
        DatabaseName: database,
        TableInput: { Name: table, TableType: 'EXTERNAL_TABLE', Parameters: { classification: 'parquet' }, PartitionKeys: [{ Name: 'dt', Type: 'string' }], StorageDescriptor: sd(`s3://${bucket}/events/`) },
      }),
    );
    await glue.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: ['2026-11-01', '2026-11-02', '2026-11-03'].map((d) => part(d)) }));
    const manifest = {
      pipeline,
      units: [
        { id: 'files', type: 's3-prefix', bucket, prefix: 'events/' },
        { id: 'catalog', type: 'glue-table', database, table, dependsOn: ['files'] },
      ],
    };
    manifestPath = join(mkdtempSync(join(tmpdir(), 'etl-rollback-')), 'lake.yaml');
    writeFileSync(manifestPath, stringify(manifest));
    before = { files: await liveEtags(s3, bucket, 'events/'), ...(await catalog()) };
  });

  it('snapshots both units, rolls back the table then the files, each stage verified; a second rollback writes nothing', async () => {
    const snap = await cli('snapshot', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr).toBe(0);
    const sealed = JSON.parse(snap.stdout) as { output: { points: { unitId: string; type: string; count: number }[] } };
    expect(sealed.output.points.map((p) => [p.unitId, p.type, p.count]).sort()).toEqual([
      ['catalog', 'glue-table', 3],
      ['files', 's3-prefix', 3],
    ]);

    // The bad deploy: files rewritten and one added under a new partition; a column added; a partition moved; one dropped.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'events/dt=2026-11-02/part-0.parquet', Body: 'bad events' }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'events/dt=2026-11-04/part-0.parquet', Body: 'new bad events' }));
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'events/dt=2026-11-01/part-0.parquet' }));
    await glue.send(
      new UpdateTableCommand({
        DatabaseName: database,
        TableInput: { Name: table, TableType: 'EXTERNAL_TABLE', Parameters: { classification: 'parquet' }, PartitionKeys: [{ Name: 'dt', Type: 'string' }], StorageDescriptor: sd(`s3://${bucket}/events/`, [{ Name: 'country', Type: 'string' }]) },
      }),
    );
    await glue.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: [part('2026-11-04')] }));
    await glue.send(new UpdatePartitionCommand({ DatabaseName: database, TableName: table, PartitionValueList: ['2026-11-03'], PartitionInput: part('2026-11-03', 'events-v2') }));

    const dry = await cli('rollback', manifestPath, '--deployment', deployment, '--dry-run', '--local', '--json');
    expect(dry.code, dry.stderr).toBe(0);
    const dryReport = (JSON.parse(dry.stdout) as { report: RunReport }).report;
    expect(dryReport.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['catalog'], ['files']]);
    expect(unitReport(dryReport, 'catalog').changes).toEqual({ tablesCreated: 0, tablesUpdated: 1, partitionsCreated: 0, partitionsDeleted: 1, partitionsUpdated: 1 });
    expect((await catalog()).partitions['2026-11-04']).toBeDefined();

    const run = await cli('rollback', manifestPath, '--deployment', deployment, '--local', '--json', '--reason', 'country column broke the dashboards');
    expect(run.code, run.stderr).toBe(0);
    const report = (JSON.parse(run.stdout) as { status: string; report: RunReport }).report;
    expect(report.stages.map((st) => [st.units[0]!.unitId, st.status])).toEqual([
      ['catalog', 'VERIFIED'],
      ['files', 'VERIFIED'],
    ]);
    const cat = unitReport(report, 'catalog');
    expect(cat.changes).toEqual({ tablesCreated: 0, tablesUpdated: 1, partitionsCreated: 0, partitionsDeleted: 1, partitionsUpdated: 1 });
    expect(cat.writes).toBe(3);
    expect(cat.keptAt).toMatch(new RegExp(`^s3://${process.env.ETL_ROLLBACK_STATE_BUCKET}/quarantine/.+/catalog/glue-table\\.json$`));
    expect(cat.checks?.every((c) => c.ok)).toBe(true);

    expect(await catalog()).toEqual({ definition: before.definition, partitions: before.partitions });
    expect(await liveEtags(s3, bucket, 'events/')).toEqual(before.files);

    const again = await cli('rollback', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(again.code, again.stderr).toBe(0);
    const second = (JSON.parse(again.stdout) as { report: RunReport }).report;
    expect(unitReport(second, 'catalog').writes).toBe(0);
    expect(unitReport(second, 'files').writes).toBe(0);
  });
});
