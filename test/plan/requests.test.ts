import { describe, expect, it } from 'vitest';
import { noRequests, runRequests, stageRequests, unitRequests, unitS3Requests, workOf, type Requests } from '../../core/plan/requests.ts';

const s3 = (over: Partial<Requests>): Requests => ({ ...noRequests(), ...over });

describe('S3 requests of one unit, from its counters', () => {
  const cases: { name: string; type: string; changes: Record<string, number>; expected: Requests }[] = [
    {
      name: 'versioned prefix already as captured: two listings and two manifest reads, nothing written',
      type: 's3-prefix',
      changes: { objectsCopied: 0, deleteMarkersRemoved: 0, objectsDeleted: 0, objectsUnchanged: 4, bytesCopied: 0 },
      expected: s3({ 'S3 ListObjectVersions': 3, 'S3 GetObject': 4 }),
    },
    {
      name: 'the demo damage: two copies (three heads each), one marker batch, one deletion batch',
      type: 's3-prefix',
      changes: { objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1, objectsUnchanged: 1, bytesCopied: 36 },
      expected: s3({ 'S3 ListObjectVersions': 3, 'S3 GetObject': 4, 'S3 HeadObject': 6, 'S3 CopyObject': 2, 'S3 DeleteObjects': 2 }),
    },
    {
      name: 'a listing page holds 1,000 keys: 1,001 keys take two pages each time',
      type: 's3-prefix',
      changes: { objectsCopied: 1, deleteMarkersRemoved: 0, objectsDeleted: 0, objectsUnchanged: 1000, bytesCopied: 1 },
      expected: s3({ 'S3 ListObjectVersions': 6, 'S3 GetObject': 4, 'S3 HeadObject': 3, 'S3 CopyObject': 1 }),
    },
    {
      name: 'a DeleteObjects batch holds 1,000 keys: 1,001 deletions take two',
      type: 's3-prefix',
      changes: { objectsCopied: 0, deleteMarkersRemoved: 0, objectsDeleted: 1001, objectsUnchanged: 0, bytesCopied: 0 },
      expected: s3({ 'S3 ListObjectVersions': 6, 'S3 GetObject': 4, 'S3 DeleteObjects': 2 }),
    },
    {
      name: 'markers and deletions go in batches of their own',
      type: 's3-prefix',
      changes: { objectsCopied: 0, deleteMarkersRemoved: 3, objectsDeleted: 3, objectsUnchanged: 0, bytesCopied: 0 },
      expected: s3({ 'S3 ListObjectVersions': 3, 'S3 GetObject': 4, 'S3 DeleteObjects': 2 }),
    },
    {
      name: 'copy mode: quarantine copies count as copies, no heads',
      type: 's3-prefix',
      changes: { objectsCopied: 2, deleteMarkersRemoved: 0, objectsDeleted: 1, objectsQuarantined: 3, objectsUnchanged: 5, bytesCopied: 10 },
      expected: s3({ 'S3 ListObjectVersions': 3, 'S3 GetObject': 4, 'S3 CopyObject': 5, 'S3 DeleteObjects': 1 }),
    },
    { name: 'a postgres table makes no S3 request', type: 'postgres-table', changes: { rowsInserted: 5, rowsUpdated: 2 }, expected: noRequests() },
    { name: 'a mysql table makes no S3 request', type: 'mysql-table', changes: { rowsDeleted: 9 }, expected: noRequests() },
    { name: 'an RDS instance makes no S3 request', type: 'rds-instance', changes: { dbInstancesRestoredFromSnapshot: 1 }, expected: noRequests() },
  ];
  it.each(cases)('$name', ({ type, changes, expected }) => {
    expect(unitS3Requests(type, changes)).toEqual(expected);
  });
});

describe('the workflow around units, stages and runs', () => {
  it('each unit adds one Lambda call, two step writes, three transitions and one manifest read', () => {
    expect(unitRequests('postgres-table', { rowsInserted: 1 })).toEqual(s3({ 'S3 GetObject': 1, 'Lambda invocations': 1, 'DynamoDB writes': 2, 'Step Functions transitions': 3 }));
  });
  it('each stage adds Collect shards and Verify stage, and seven transitions', () => {
    expect(stageRequests()).toEqual(s3({ 'S3 GetObject': 2, 'Lambda invocations': 2, 'Step Functions transitions': 7 }));
  });
  it('each run writes its report three times and ten ledger items', () => {
    expect(runRequests()).toMatchObject({ 'S3 PutObject': 3, 'DynamoDB writes': 10, 'Lambda invocations': 7, 'Step Functions transitions': 12 });
  });
});

describe('what a unit moves', () => {
  const cases: [string, Record<string, number>, { objects: number; bytes: number; rows: number }][] = [
    ['objects copied, uncovered and hidden are objects; unchanged ones are not', { objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1, objectsUnchanged: 7, bytesCopied: 36 }, { objects: 4, bytes: 36, rows: 0 }],
    ['quarantined objects are copies too', { objectsCopied: 1, objectsQuarantined: 1 }, { objects: 2, bytes: 0, rows: 0 }],
    ['rows inserted, updated, deleted and quarantined are rows', { rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2, rowsQuarantined: 5 }, { objects: 0, bytes: 0, rows: 12 }],
    ['rows left alone are not', { rowsUnchanged: 500 }, { objects: 0, bytes: 0, rows: 0 }],
    ['schema changes and RDS counters move nothing countable', { schemaChanges: 1, dbInstancesRestoredFromSnapshot: 1 }, { objects: 0, bytes: 0, rows: 0 }],
    ['no counters', {}, { objects: 0, bytes: 0, rows: 0 }],
  ];
  it.each(cases)('%s', (_, changes, expected) => {
    expect(workOf(changes)).toEqual(expected);
  });
});
