import {
  BucketAlreadyOwnedByYou,
  CreateBucketCommand,
  HeadBucketCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  PutObjectLockConfigurationCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Log } from '../adapters/types.ts';
import { renderMarkdown, type RunReport } from './report.ts';

/**
 * The audit trail in S3: every run's report as JSON and Markdown, each deployment's snapshot summary and release record.
 * In AWS the keys land in the audit bucket (Object Lock, KMS; the run roles may put but never delete or shorten
 * retention); without one (local runs) in the state bucket, as before. Keys are derived from pipeline, deployment and
 * run, so a retried write makes a new version of the same key and never replaces the locked one.
 */
export const auditKeys = {
  reportJson: (pipeline: string, runId: string) => `reports/${pipeline}/${runId}.json`,
  reportMarkdown: (pipeline: string, runId: string) => `reports/${pipeline}/${runId}.md`,
  snapshot: (pipeline: string, deploymentId: string) => `deployments/${pipeline}/${deploymentId}/snapshot.json`,
  release: (pipeline: string, deploymentId: string) => `deployments/${pipeline}/${deploymentId}/release.json`,
};

/** What the workflow knows about the audit store: the bucket, when one is configured (ETL_ROLLBACK_AUDIT_BUCKET). */
export interface AuditDeps {
  auditBucket?: string;
}

/** The audit bucket of a deps object that may carry one (handlers wire it from the environment; tests may not). */
export function auditBucketOf(deps: object): string | undefined {
  const bucket = (deps as AuditDeps).auditBucket;
  return typeof bucket === 'string' && bucket.length > 0 ? bucket : undefined;
}

async function put(s3: S3Client, bucket: string, key: string, body: string, contentType: string): Promise<void> {
  // The SDK adds a CRC32 checksum to every PutObject: Object Lock requires an integrity header on writes.
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }));
}

/** Writes a run's report as JSON and Markdown; returns the keys written. */
export async function writeAuditReport(s3: S3Client, bucket: string, report: RunReport): Promise<{ bucket: string; json: string; markdown: string }> {
  const json = auditKeys.reportJson(report.pipeline, report.runId);
  const markdown = auditKeys.reportMarkdown(report.pipeline, report.runId);
  await put(s3, bucket, json, JSON.stringify(report, null, 2), 'application/json');
  await put(s3, bucket, markdown, renderMarkdown(report), 'text/markdown; charset=utf-8');
  return { bucket, json, markdown };
}

export async function writeAuditJson(s3: S3Client, bucket: string, key: string, value: unknown): Promise<void> {
  await put(s3, bucket, key, JSON.stringify(value, null, 2), 'application/json');
}

/**
 * Writes to the audit store without failing the caller: the audit copy must never turn a verified rollback into a failed
 * one. A failure is logged as a warning (and counted by the caller's metrics); the state bucket keeps the report.
 */
export async function auditSafely<T>(log: Log, what: string, write: () => Promise<T>, attempts = 3): Promise<T | undefined> {
  // The SDK retries what it knows to be transient; a write that failed otherwise (a reset after sending, a refusal
  // that goes away) gets a few more tries here, since the report is the run's record. Writes are idempotent: the same
  // key, the same content.
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (attempt < attempts) {
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
        continue;
      }
      log.warn('audit write failed', { what, attempts, error: { name: (error as Error).name, message: (error as Error).message } });
      return undefined;
    }
  }
}

export type ObjectLockMode = 'GOVERNANCE' | 'COMPLIANCE';

/**
 * Creates an audit bucket with Object Lock (default retention `days` in `mode`) and versioning, if missing: local runs
 * against moto or a sandbox account. In AWS the stack owns it (infra/constructs/audit.ts), with KMS and a bucket policy.
 */
export async function ensureAuditBucket(s3: S3Client, bucket: string, opts: { mode: ObjectLockMode; days: number }): Promise<void> {
  // An existing bucket is left as it is (us-east-1 answers CreateBucket of one's own bucket with 200, so ask first).
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (error) {
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw error;
  }
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
  } catch (error) {
    if (!(error instanceof BucketAlreadyOwnedByYou) && (error as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw error;
    return;
  }
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  await s3.send(
    new PutObjectLockConfigurationCommand({
      Bucket: bucket,
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: opts.mode, Days: opts.days } } },
    }),
  );
}

/** The snapshot's summary per deployment, written once its restore points are sealed: what a rollback could go back to. */
export async function recordSnapshotSummary(
  deps: { s3: S3Client; stateBucket: string; log: Log; now(): Date },
  sealed: { pipeline: string; deploymentId: string; status: string; points: { unitId: string; type: string; count: number; checksum: string }[] },
): Promise<void> {
  const bucket = auditBucketOf(deps) ?? deps.stateBucket;
  await auditSafely(deps.log, `snapshot summary of ${sealed.pipeline}/${sealed.deploymentId}`, () =>
    writeAuditJson(deps.s3, bucket, auditKeys.snapshot(sealed.pipeline, sealed.deploymentId), { ...sealed, sealedAt: deps.now().toISOString() }),
  );
}
