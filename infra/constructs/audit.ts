import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { ArnPrincipal, Effect, type IRole, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import { BlockPublicAccess, Bucket, BucketEncryption, type IBucket, ObjectLockRetention, ObjectOwnership } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';

/**
 * Object Lock mode of the audit bucket.
 *
 * GOVERNANCE (the default): a locked version cannot be deleted or have its retention shortened except by a principal
 * granted s3:BypassGovernanceRetention that asks for the bypass explicitly (logged in CloudTrail). The roles that run
 * rollbacks are denied that permission, and every delete and retention change, by the bucket policy, so the automation
 * can never rewrite its own record; an account administrator still can, deliberately, e.g. to erase a report that
 * leaked personal data, or to undo a mistyped 10-year retention.
 *
 * COMPLIANCE: nobody, the account root included, can delete a locked version or shorten its retention until it expires,
 * and the bucket cannot be emptied or deleted before then. Choose it when a regulation requires WORM storage (SEC 17a-4,
 * FINRA); it makes configuration mistakes irreversible for the whole retention period.
 */
export type AuditObjectLockMode = 'GOVERNANCE' | 'COMPLIANCE';

export const DEFAULT_AUDIT_RETENTION = Duration.days(365);

/** What the roles that run rollbacks may never do on the audit bucket (bucket policy, Deny, whatever else they are granted). */
export const AUDIT_DENIED_ACTIONS = [
  's3:DeleteObject*',
  's3:PutObjectRetention',
  's3:BypassGovernanceRetention',
  's3:PutObjectLegalHold',
  's3:PutBucketObjectLockConfiguration',
  's3:PutBucketVersioning',
  's3:PutLifecycleConfiguration',
  's3:PutBucketPolicy',
  's3:DeleteBucketPolicy',
  's3:DeleteBucket',
];

/** Key prefixes the writers may put to: reports and per-deployment records (snapshot summary, release). */
export const AUDIT_WRITE_PREFIXES = ['reports/*', 'deployments/*'];

export interface AuditStoreProps {
  /** Default Object Lock retention of every object written. @default 365 days */
  readonly retention?: Duration;
  /** @default 'GOVERNANCE' (see AuditObjectLockMode) */
  readonly mode?: AuditObjectLockMode;
  /** Server access logs go here (the stack's access-log bucket), under `audit-bucket/`. */
  readonly accessLogBucket: IBucket;
  /** Roles that write reports and records: PutObject under AUDIT_WRITE_PREFIXES, and GenerateDataKey on the key. */
  readonly writers: readonly IRole[];
  /** Roles that run rollbacks (every handler role): denied AUDIT_DENIED_ACTIONS by the bucket policy. */
  readonly runRoles: readonly IRole[];
}

/**
 * The audit store: a versioned S3 bucket with Object Lock (default retention in GOVERNANCE or COMPLIANCE mode), encrypted
 * with a customer-managed KMS key that rotates yearly, private, TLS-only, access-logged and retained. Every run writes
 * its report (JSON and Markdown) here, every sealed snapshot its summary, every release its record. A retried write
 * makes a new version; the locked versions stay.
 */
export class AuditStore extends Construct {
  readonly bucket: Bucket;
  readonly key: Key;
  readonly mode: AuditObjectLockMode;
  readonly retentionDays: number;

  constructor(scope: Construct, id: string, props: AuditStoreProps) {
    super(scope, id);
    this.mode = props.mode ?? 'GOVERNANCE';
    const retention = props.retention ?? DEFAULT_AUDIT_RETENTION;
    const days = retention.toDays({ integral: false });
    if (!Number.isInteger(days) || days < 1) throw new Error(`audit retention: must be a whole number of days, at least 1 (got ${retention.toHumanString()})`);
    this.retentionDays = days;

    this.key = new Key(this, 'Key', {
      description: 'etl-rollback audit store (reports, snapshot summaries, release records)',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.bucket = new Bucket(this, 'Bucket', {
      versioned: true,
      objectLockEnabled: true,
      objectLockDefaultRetention: this.mode === 'COMPLIANCE' ? ObjectLockRetention.compliance(retention) : ObjectLockRetention.governance(retention),
      encryption: BucketEncryption.KMS,
      encryptionKey: this.key,
      bucketKeyEnabled: true,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      serverAccessLogsBucket: props.accessLogBucket,
      serverAccessLogsPrefix: 'audit-bucket/',
      removalPolicy: RemovalPolicy.RETAIN,
    });

    if (props.runRoles.length > 0) {
      this.bucket.addToResourcePolicy(
        new PolicyStatement({
          sid: 'RunRolesNeverDeleteOrShortenRetention',
          effect: Effect.DENY,
          principals: props.runRoles.map((role) => new ArnPrincipal(role.roleArn)),
          actions: AUDIT_DENIED_ACTIONS,
          resources: [this.bucket.bucketArn, this.bucket.arnForObjects('*')],
        }),
      );
    }

    const objectArns = AUDIT_WRITE_PREFIXES.map((prefix) => this.bucket.arnForObjects(prefix));
    for (const role of props.writers) {
      role.addToPrincipalPolicy(new PolicyStatement({ sid: 'AuditPut', effect: Effect.ALLOW, actions: ['s3:PutObject'], resources: objectArns }));
      role.addToPrincipalPolicy(new PolicyStatement({ sid: 'AuditKey', effect: Effect.ALLOW, actions: ['kms:GenerateDataKey'], resources: [this.key.keyArn] }));
      for (const arn of objectArns) {
        acknowledge(
          role,
          iam5ResourceFinding(role, arn),
          'PutObject on one key prefix of the audit bucket of this stack (reports/<pipeline>/<run>, deployments/<pipeline>/<deployment>/): ' +
            'the keys are made at run time; delete and retention changes are denied to this role by the bucket policy.',
        );
      }
    }
  }
}
