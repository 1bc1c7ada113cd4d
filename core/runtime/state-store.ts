import { createHash } from 'node:crypto';
import {
  BucketAlreadyOwnedByYou,
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  NoSuchKey,
  NotFound,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { InputError } from '../errors.ts';

/**
 * JSON documents in the state bucket: manifests as deployed, reports. Keys are derived from pipeline,
 * deployment and run, so a retried write lands on the same key.
 */
export const stateKeys = {
  manifest: (pipeline: string, deploymentId: string) => `deployments/${pipeline}/${deploymentId}/manifest.json`,
  report: (pipeline: string, runId: string) => `reports/${pipeline}/${runId}.json`,
  upload: (pipeline: string, sha: string) => `manifests/${pipeline}/${sha}.json`,
  /** The runbook of a run, written when it is planned (the start notification links it). */
  runbook: (pipeline: string, runId: string) => `runbooks/${pipeline}/${runId}.md`,
  /** What a run's write freeze of one unit replaced (the bucket policy before, the grants revoked): kept before it is written. */
  freeze: (pipeline: string, runId: string, unitId: string) => `freeze/${pipeline}/${runId}/${unitId}.json`,
  /** Every freeze record of a run. */
  freezes: (pipeline: string, runId: string) => `freeze/${pipeline}/${runId}/`,
};

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function isMissing(error: unknown): boolean {
  return error instanceof NoSuchKey || error instanceof NotFound || (error as { name?: string })?.name === 'NotFound';
}

export class StateStore {
  constructor(
    private readonly s3: S3Client,
    readonly bucket: string,
  ) {}

  async getJson<T>(key: string): Promise<T | undefined> {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return JSON.parse(await out.Body!.transformToString()) as T;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async putJson(key: string, value: unknown): Promise<void> {
    await this.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: JSON.stringify(value, null, 2), ContentType: 'application/json' }),
    );
  }

  async putText(key: string, body: string, contentType: string): Promise<string> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }));
    return `s3://${this.bucket}/${key}`;
  }

  /**
   * Writes a document that must never change once written (a deployed manifest): writes it if absent,
   * accepts the same content again, refuses different content.
   */
  async putJsonOnce(key: string, value: unknown, what: string): Promise<void> {
    const body = JSON.stringify(value, null, 2);
    const digest = sha256(body);
    try {
      const head = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      if (head.Metadata?.sha256 === digest) return;
      throw new InputError(`${what} already exists at s3://${this.bucket}/${key} with different content: a deployment's manifest cannot change; use a new deployment id`);
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    await this.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: 'application/json', Metadata: { sha256: digest } }),
    );
  }
}

/** Creates the state bucket (versioned) if missing: local runs. In AWS the stack owns it. */
export async function ensureStateBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    if (!(error instanceof BucketAlreadyOwnedByYou) && (error as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw error;
  }
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
}
