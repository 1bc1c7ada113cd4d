import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  ObjectOwnership,
} from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface StateBucketProps {
  /**
   * How long a restore point must stay usable. Noncurrent versions of state objects (version manifests, reports) are
   * never expired sooner than this.
   * @default 30 days
   */
  readonly restorePointRetention?: Duration;
  /**
   * How long the server access logs of the state bucket are kept.
   * @default 365 days
   */
  readonly accessLogRetention?: Duration;
}

export const DEFAULT_RESTORE_POINT_RETENTION = Duration.days(30);
const DEFAULT_ACCESS_LOG_RETENTION = Duration.days(365);

/**
 * The state bucket: version manifests, stored manifests and run reports. Versioned, so an overwritten or deleted
 * object stays recoverable for at least the restore-point retention; private, TLS-only, encrypted, access-logged to a
 * separate bucket, and retained when the stack is deleted.
 */
export class StateBucket extends Construct {
  readonly bucket: Bucket;
  readonly accessLogBucket: Bucket;

  constructor(scope: Construct, id: string, props: StateBucketProps = {}) {
    super(scope, id);

    const retentionDays = wholeDays(props.restorePointRetention ?? DEFAULT_RESTORE_POINT_RETENTION, 'restorePointRetention');
    const accessLogDays = wholeDays(props.accessLogRetention ?? DEFAULT_ACCESS_LOG_RETENTION, 'accessLogRetention');

    this.accessLogBucket = new Bucket(this, 'AccessLogs', {
      // S3 server access log delivery supports SSE-S3 only on the target bucket (not SSE-KMS).
      encryption: BucketEncryption.S3_MANAGED,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      versioned: false,
      lifecycleRules: [
        { id: 'ExpireAccessLogs', expiration: Duration.days(accessLogDays) },
        { id: 'AbortIncompleteUploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // No access logging on the access-log bucket itself: cdk-nag (S1) accepts a bucket that is the log target of
    // another bucket in the stack, and logging it to itself would log its own deliveries recursively.

    this.bucket = new Bucket(this, 'Bucket', {
      versioned: true,
      // AWS managed key (aws/s3) with an S3 Bucket Key: encrypted with KMS, key use auditable in CloudTrail, no KMS
      // grants (and no kms:* wildcards) needed on the handler roles.
      encryption: BucketEncryption.KMS_MANAGED,
      bucketKeyEnabled: true,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      serverAccessLogsBucket: this.accessLogBucket,
      serverAccessLogsPrefix: 'state-bucket/',
      lifecycleRules: [
        {
          // A restore point is only as good as the versions it names: never expire a noncurrent version sooner than
          // the restore-point retention. Current versions are never expired by lifecycle; the release step removes
          // what a released restore point no longer needs.
          id: 'KeepNoncurrentVersionsForRestorePointRetention',
          noncurrentVersionExpiration: Duration.days(retentionDays),
        },
        { id: 'AbortIncompleteUploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }
}

function wholeDays(duration: Duration, name: string): number {
  const days = duration.toDays({ integral: false });
  if (!Number.isInteger(days) || days < 1) {
    throw new Error(`${name}: must be a whole number of days, at least 1 (got ${duration.toHumanString()})`);
  }
  return days;
}
