import { DeleteBucketPolicyCommand, GetBucketPolicyCommand, PutBucketPolicyCommand, type S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { InputError } from '../../errors.ts';

/**
 * Write freeze of an s3-prefix unit: one statement in the bucket policy that denies every write to `bucket/prefix*` to
 * every principal but the rollback's own (Condition `ArnNotEquals aws:PrincipalArn`). A Deny wins over any Allow, so a
 * pipeline that keeps writing while its data is restored gets AccessDenied instead of mixing new objects into the
 * restored prefix.
 *
 * The statement is the run's alone: its Sid names the run and the unit, freezing adds only it (replacing an earlier copy
 * of itself, so a retried freeze converges), and lifting removes only it. Whatever else is in the policy — the bucket's
 * own statements, and statements someone added while the freeze was on — stays as it is. A policy that held nothing but
 * our statement is deleted (a policy without statements cannot be put). The policy as it was before the freeze is kept
 * in the state bucket by the caller (core/adapters/freeze/index.ts) before the policy is written, as evidence and so a
 * person can compare.
 *
 * A prefix holding "*" or "?" widens the Resource (IAM reads them as wildcards): the freeze then also covers keys beyond
 * the prefix, never fewer.
 */

/** Every action that changes an object or its version, tags, ACL, retention or legal hold. */
export const FROZEN_S3_ACTIONS = [
  's3:PutObject',
  's3:DeleteObject',
  's3:DeleteObjectVersion',
  's3:PutObjectTagging',
  's3:DeleteObjectTagging',
  's3:PutObjectVersionTagging',
  's3:DeleteObjectVersionTagging',
  's3:PutObjectAcl',
  's3:PutObjectVersionAcl',
  's3:PutObjectRetention',
  's3:PutObjectLegalHold',
] as const;

export interface PolicyStatement {
  Sid?: string;
  [k: string]: unknown;
}

export interface BucketPolicy {
  Version?: string;
  Statement: PolicyStatement[];
  [k: string]: unknown;
}

/**
 * The Sid of the freeze statement of one unit in one run: `EtlRollbackFreeze` + the run id's letters and digits + a
 * digest of run and unit (Sids are letters and digits; the digest keeps two units on one bucket apart, and two run ids
 * that differ only in punctuation).
 */
export function freezeSid(runId: string, unitId: string): string {
  const digest = createHash('sha256').update(`${runId}\n${unitId}`).digest('hex').slice(0, 12);
  return `EtlRollbackFreeze${runId.replace(/[^A-Za-z0-9]/g, '').slice(0, 60)}${digest}`;
}

export function freezeStatement(input: { bucket: string; prefix: string; sid: string; principals: string[] }): PolicyStatement {
  return {
    Sid: input.sid,
    Effect: 'Deny',
    Principal: '*',
    Action: [...FROZEN_S3_ACTIONS],
    Resource: `arn:aws:s3:::${input.bucket}/${input.prefix}*`,
    Condition: { ArnNotEquals: { 'aws:PrincipalArn': input.principals } },
  };
}

/**
 * The policy with the freeze statement in it (replacing an earlier copy of itself, every other statement kept in its
 * order), or undefined when it is already there as wanted.
 */
export function withFreeze(current: BucketPolicy | undefined, statement: PolicyStatement): BucketPolicy | undefined {
  const existing = current?.Statement.find((st) => st.Sid === statement.Sid);
  if (existing && JSON.stringify(existing) === JSON.stringify(statement)) return undefined;
  const others = (current?.Statement ?? []).filter((st) => st.Sid !== statement.Sid);
  return { ...(current ?? {}), Version: current?.Version ?? '2012-10-17', Statement: [...others, statement] };
}

/**
 * The policy without the freeze statement `sid`: 'unchanged' when it holds none, 'empty' when nothing else is left
 * (a policy without statements cannot be put: it is deleted).
 */
export function withoutFreeze(current: BucketPolicy | undefined, sid: string): BucketPolicy | 'unchanged' | 'empty' {
  if (!current || !current.Statement.some((st) => st.Sid === sid)) return 'unchanged';
  const others = current.Statement.filter((st) => st.Sid !== sid);
  return others.length === 0 ? 'empty' : { ...current, Statement: others };
}

/** The bucket's policy, parsed; undefined when it has none. */
export async function readBucketPolicy(s3: S3Client, bucket: string): Promise<{ text: string; policy: BucketPolicy } | undefined> {
  let text: string | undefined;
  try {
    text = (await s3.send(new GetBucketPolicyCommand({ Bucket: bucket }))).Policy;
  } catch (error) {
    if ((error as { name?: string }).name === 'NoSuchBucketPolicy') return undefined;
    throw error;
  }
  if (!text) return undefined;
  const parsed = JSON.parse(text) as { Statement?: PolicyStatement | PolicyStatement[] } & Record<string, unknown>;
  const statements = parsed.Statement === undefined ? [] : Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement];
  return { text, policy: { ...parsed, Statement: statements } };
}

/**
 * Puts the freeze statement into the bucket's policy (replacing an earlier copy of itself). Returns whether the policy
 * changed. Refused when no principal is excepted: the freeze would deny the rollback its own writes.
 */
export async function applyS3Freeze(
  s3: S3Client,
  input: { bucket: string; prefix: string; sid: string; principals: string[] },
): Promise<{ changed: boolean }> {
  if (input.principals.length === 0) {
    throw new InputError(
      `cannot freeze s3://${input.bucket}/${input.prefix}: the rollback's own principal is unknown (set ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS to the ARN(s) the restore runs as), and a freeze without it would refuse the restore's own writes`,
    );
  }
  const current = await readBucketPolicy(s3, input.bucket);
  const policy = withFreeze(current?.policy, freezeStatement(input));
  if (!policy) return { changed: false };
  await s3.send(new PutBucketPolicyCommand({ Bucket: input.bucket, Policy: JSON.stringify(policy) }));
  return { changed: true };
}

/**
 * Removes the freeze statement `sid` from the bucket's policy; every other statement stays. A policy left without
 * statements is deleted. Idempotent: returns changed false when the statement is already gone.
 */
export async function liftS3Freeze(s3: S3Client, input: { bucket: string; sid: string }): Promise<{ changed: boolean }> {
  const current = await readBucketPolicy(s3, input.bucket);
  const lifted = withoutFreeze(current?.policy, input.sid);
  if (lifted === 'unchanged') return { changed: false };
  if (lifted === 'empty') await s3.send(new DeleteBucketPolicyCommand({ Bucket: input.bucket }));
  else await s3.send(new PutBucketPolicyCommand({ Bucket: input.bucket, Policy: JSON.stringify(lifted) }));
  return { changed: true };
}
