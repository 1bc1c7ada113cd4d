import { Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';

export interface DataAccessProps {
  /** Data buckets whose prefixes may be captured and restored: bucket names or `arn:aws:s3:::name` ARNs. */
  readonly protectedBuckets: readonly string[];
  /** Secrets Manager secret ARNs holding database credentials (full ARN, or the name with `-??????`). */
  readonly databaseSecretArns: readonly string[];
  /** The roles of the handlers that touch the protected data, and only those. */
  readonly roles: readonly IRole[];
}

/** Read and read-back actions on a data bucket itself: what capture needs to refuse an unsafe bucket, and list. */
export const DATA_BUCKET_ACTIONS = ['s3:ListBucketVersions', 's3:GetBucketVersioning', 's3:GetLifecycleConfiguration'];
/**
 * Object actions for capture (read), restore (copy an old version back with its tags, delete what was added,
 * remove delete markers). A copy reads the source version's tags and writes them on the copy; a copy above the
 * single-copy limit is a multipart copy (UploadPartCopy is s3:PutObject), aborted if it fails. A captured version in an
 * archive tier (Glacier, Deep Archive, Intelligent-Tiering archive tiers) is first retrieved (s3:RestoreObject).
 */
export const DATA_OBJECT_ACTIONS = [
  's3:GetObject',
  's3:GetObjectVersion',
  's3:GetObjectTagging',
  's3:GetObjectVersionTagging',
  's3:PutObject',
  's3:PutObjectTagging',
  's3:AbortMultipartUpload',
  's3:DeleteObject',
  's3:DeleteObjectVersion',
  's3:RestoreObject',
];

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const BUCKET_ARN = /^arn:aws[a-z-]*:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$/;
const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@?-]+$/;

/**
 * Access to the protected data — the buckets and databases that a rollback puts back — for the handlers that capture,
 * compare, restore and verify, named bucket by bucket and secret by secret. Nothing is granted when nothing is named:
 * there is no fallback to "*".
 */
export class DataAccess extends Construct {
  /** The policy attached to the data handlers' roles; undefined when no bucket and no secret is named. */
  readonly policy?: Policy;
  readonly bucketArns: readonly string[];

  constructor(scope: Construct, id: string, props: DataAccessProps) {
    super(scope, id);

    this.bucketArns = props.protectedBuckets.map((bucket, i) => bucketArn(this, bucket, `protectedBuckets[${i}]`));
    props.databaseSecretArns.forEach((arn, i) => {
      if (!SECRET_ARN.test(arn)) {
        throw new Error(
          `databaseSecretArns[${i}]: "${arn}" is not a Secrets Manager secret ARN ` +
            '(arn:aws:secretsmanager:<region>:<account>:secret:<name>; "*" is not allowed)',
        );
      }
    });

    const statements: PolicyStatement[] = [];
    if (this.bucketArns.length > 0) {
      statements.push(
        new PolicyStatement({
          sid: 'ProtectedBuckets',
          effect: Effect.ALLOW,
          actions: DATA_BUCKET_ACTIONS,
          resources: [...this.bucketArns],
        }),
        new PolicyStatement({
          sid: 'ProtectedObjects',
          effect: Effect.ALLOW,
          actions: DATA_OBJECT_ACTIONS,
          resources: this.bucketArns.map((arn) => `${arn}/*`),
        }),
      );
    }
    if (props.databaseSecretArns.length > 0) {
      statements.push(
        new PolicyStatement({
          sid: 'DatabaseSecrets',
          effect: Effect.ALLOW,
          actions: ['secretsmanager:GetSecretValue'],
          resources: [...props.databaseSecretArns],
        }),
      );
    }
    if (statements.length === 0) return;

    const policy = new Policy(this, 'Policy', { statements, roles: [...props.roles] });
    for (const arn of this.bucketArns) {
      acknowledge(
        policy,
        iam5ResourceFinding(policy, `${arn}/*`),
        `Object-level actions on the objects of the protected bucket ${arn}, named explicitly in protectedBuckets: a ` +
          'unit is a key prefix whose objects are only known at capture time; prefix boundaries are enforced by the ' +
          'adapter (exact prefix match).',
      );
    }
    this.policy = policy;
  }
}

function bucketArn(scope: Construct, bucket: string, path: string): string {
  const trimmed = bucket.trim();
  if (BUCKET_ARN.test(trimmed)) return trimmed;
  if (BUCKET_NAME.test(trimmed)) return `arn:${Stack.of(scope).partition}:s3:::${trimmed}`;
  throw new Error(`${path}: "${bucket}" is neither an S3 bucket name nor an S3 bucket ARN (wildcards are not allowed)`);
}
