import { DescribeDBClustersCommand, DescribeDBInstanceAutomatedBackupsCommand, DescribeDBInstancesCommand, type RDSClient } from '@aws-sdk/client-rds';
import { OutsideRestorableWindowError } from '../../errors.ts';

/**
 * The span of times an RDS instance or Aurora cluster can be restored to from its automated backups
 * (point-in-time restore). A `--to` rollback asks for a time; it is checked here, at plan time, so that a time the
 * service cannot restore is refused before anything is touched, with the window named so the person can pick again.
 */
export interface RestorableWindow {
  earliest: Date;
  latest: Date;
}

/** ISO-8601 UTC, without the milliseconds when they are zero (`2026-11-29T09:30:00Z`). */
export function isoUtc(at: Date): string {
  return at.toISOString().replace(/\.000Z$/, 'Z');
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * An instance's window. The latest end is `LatestRestorableTime` (RDS keeps it a few minutes behind now). The earliest
 * is what RDS reports for the automated backups (`RestoreWindow.EarliestTime`), or, where that is not reported, the
 * later of the instance's creation and `LatestRestorableTime` minus the retention period. Undefined: no such instance.
 * An instance without automated backups (retention 0) has no window at all: refused, saying so.
 */
export async function instanceWindow(rds: RDSClient, id: string): Promise<RestorableWindow | undefined> {
  let instance;
  try {
    instance = (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))).DBInstances?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBInstanceNotFoundFault') return undefined;
    throw error;
  }
  if (!instance) return undefined;
  const retention = instance.BackupRetentionPeriod ?? 0;
  if (retention === 0 || !instance.LatestRestorableTime) {
    throw new OutsideRestorableWindowError(
      `DB instance ${id} has no restorable window: its automated backups are off (backup retention ${retention} days), so it cannot be restored to a point in time. ` +
        'Turn automated backups on for later deploys, or roll back to a deployment\'s restore point instead.',
    );
  }
  const latest = instance.LatestRestorableTime;
  let earliest: Date | undefined;
  try {
    const backups = await rds.send(new DescribeDBInstanceAutomatedBackupsCommand({ DBInstanceIdentifier: id }));
    const reported = (backups.DBInstanceAutomatedBackups ?? [])
      .filter((b) => b.DbiResourceId === undefined || b.DbiResourceId === instance.DbiResourceId)
      .map((b) => b.RestoreWindow?.EarliestTime)
      .filter((t): t is Date => t !== undefined);
    if (reported.length > 0) earliest = new Date(Math.min(...reported.map((t) => t.getTime())));
  } catch (error) {
    // The automated-backups listing is an extra precision, not a requirement: fall back to the retention period.
    if (!/NotFound|AccessDenied/.test((error as Error).name)) throw error;
  }
  if (!earliest) {
    const byRetention = latest.getTime() - retention * DAY_MS;
    earliest = new Date(Math.max(byRetention, instance.InstanceCreateTime?.getTime() ?? byRetention));
  }
  return { earliest, latest };
}

/** A cluster's window: Aurora reports both ends (`EarliestRestorableTime`, `LatestRestorableTime`). */
export async function clusterWindow(rds: RDSClient, id: string): Promise<RestorableWindow | undefined> {
  let cluster;
  try {
    cluster = (await rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: id }))).DBClusters?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBClusterNotFoundFault') return undefined;
    throw error;
  }
  if (!cluster) return undefined;
  if (!cluster.EarliestRestorableTime || !cluster.LatestRestorableTime) {
    throw new OutsideRestorableWindowError(`DB cluster ${id} reports no restorable window (no automated backups yet), so it cannot be restored to a point in time.`);
  }
  return { earliest: cluster.EarliestRestorableTime, latest: cluster.LatestRestorableTime };
}

/** Refuses `at` outside `[earliest, latest]`, naming the resource, the time asked for and the window. */
export function checkInWindow(resource: string, at: Date, window: RestorableWindow): void {
  if (at.getTime() >= window.earliest.getTime() && at.getTime() <= window.latest.getTime()) return;
  const side = at.getTime() < window.earliest.getTime() ? 'before the earliest restorable time' : 'after the latest restorable time';
  throw new OutsideRestorableWindowError(
    `${resource} cannot be restored to ${isoUtc(at)}: that is ${side}; its restorable window is [${isoUtc(window.earliest)}, ${isoUtc(window.latest)}]. ` +
      'Pick a time inside the window.',
  );
}
