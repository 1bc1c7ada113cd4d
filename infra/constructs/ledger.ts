import { RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';

/** The attribute DynamoDB's TTL reads: epoch seconds after which an item (a lock, a finished run's steps) may go. */
export const LEDGER_TTL_ATTRIBUTE = 'expiresAt';

/**
 * The ledger: deployments, restore points, runs, steps and the per-pipeline lock, in one single-table design
 * (`pk`/`sk` strings). Retained on stack deletion and protected from deletion: it is the only record of which restore
 * points exist.
 */
export class Ledger extends Construct {
  readonly table: Table;

  constructor(scope: Construct, id: string) {
    super(scope, id);

    this.table = new Table(this, 'Table', {
      partitionKey: { name: 'pk', type: AttributeType.STRING },
      sortKey: { name: 'sk', type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: LEDGER_TTL_ATTRIBUTE,
      // AWS managed key (aws/dynamodb): encrypted at rest, key use auditable in CloudTrail, and callers need no KMS
      // grants, so the handler roles carry no kms:* wildcards.
      encryption: TableEncryption.AWS_MANAGED,
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }
}
