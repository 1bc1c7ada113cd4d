import { Fn, Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { Function as LambdaFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface FreezeAccessProps {
  /**
   * Buckets of the s3-prefix units with `freeze: true` (names or ARNs); each must also be in protectedBuckets. Only their
   * bucket policies may be read, written and deleted, and only by the roles that put and lift freezes.
   */
  readonly frozenBuckets: readonly string[];
  readonly protectedBuckets: readonly string[];
  /** Database secrets: a table freeze revokes and grants back over the unit's connection. */
  readonly databaseSecretArns: readonly string[];
  /** The roles of "Freeze stage writes" and "Lift write freezes". */
  readonly policyRoles: readonly IRole[];
  /** The freezing function: told, by environment, which roles its statements except. */
  readonly freezeFunction: LambdaFunction;
  /** The roles the restore writes as (restore-unit, restore-shard, and verify-stage for the second pass): excepted from every freeze statement. */
  readonly restoreRoles: readonly IRole[];
}

export const FREEZE_POLICY_ACTIONS = ['s3:GetBucketPolicy', 's3:PutBucketPolicy', 's3:DeleteBucketPolicy'];

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const BUCKET_ARN = /^arn:aws[a-z-]*:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$/;

function bucketName(bucket: string, path: string): string {
  const trimmed = bucket.trim();
  const arn = BUCKET_ARN.exec(trimmed);
  if (arn) return arn[1]!;
  if (BUCKET_NAME.test(trimmed)) return trimmed;
  throw new Error(`${path}: "${bucket}" is neither an S3 bucket name nor an S3 bucket ARN (wildcards are not allowed)`);
}

/**
 * Write freezes (the manifest's `freeze`): the roles that put and lift them may edit the bucket policy of the frozen
 * units' buckets, named one by one, and nothing else; the freezing function learns the restore roles' ARNs, which its
 * statement excepts (`ArnNotEquals aws:PrincipalArn`), from ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS. No frozen bucket: no
 * grant. Table freezes go over the units' database connections: the same secrets the data handlers read.
 */
export class FreezeAccess extends Construct {
  readonly policy?: Policy;

  constructor(scope: Construct, id: string, props: FreezeAccessProps) {
    super(scope, id);
    const protectedNames = new Set(props.protectedBuckets.map((b, i) => bucketName(b, `protectedBuckets[${i}]`)));
    const names = props.frozenBuckets.map((b, i) => {
      const name = bucketName(b, `frozenBuckets[${i}]`);
      if (!protectedNames.has(name)) throw new Error(`frozenBuckets[${i}]: "${name}" is not in protectedBuckets: a frozen unit's bucket is one the rollback restores`);
      return name;
    });
    props.freezeFunction.addEnvironment('ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS', Fn.join(',', props.restoreRoles.map((r) => r.roleArn)));
    const statements: PolicyStatement[] = [];
    if (names.length > 0) {
      statements.push(
        new PolicyStatement({
          sid: 'FrozenBucketPolicies',
          effect: Effect.ALLOW,
          actions: FREEZE_POLICY_ACTIONS,
          resources: names.map((name) => `arn:${Stack.of(this).partition}:s3:::${name}`),
        }),
      );
    }
    if (props.databaseSecretArns.length > 0) {
      statements.push(
        new PolicyStatement({ sid: 'FreezeDatabaseSecrets', effect: Effect.ALLOW, actions: ['secretsmanager:GetSecretValue'], resources: [...props.databaseSecretArns] }),
      );
    }
    if (statements.length === 0) return;
    this.policy = new Policy(this, 'Policy', { roles: [...props.policyRoles], statements });
  }
}
