import { type App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { EtlRollbackStack, type EtlRollbackStackProps } from './stack.ts';

/** The construct id of the one stack; the CloudFormation stack name defaults to it. */
export const STACK_ID = 'EtlRollbackStack';

export interface EtlRollbackContext {
  readonly protectedBuckets: string[];
  readonly databaseSecretArns: string[];
  readonly stackName?: string;
}

/**
 * Reads the optional context: `protectedBuckets` and `databaseSecretArns` as a comma list (`-c protectedBuckets=a,b`)
 * or a JSON array (cdk.json), `stackName` as a string.
 */
export function readContext(app: App): EtlRollbackContext {
  const stackName = app.node.tryGetContext('stackName') as unknown;
  if (stackName !== undefined && (typeof stackName !== 'string' || stackName.trim() === '')) {
    throw new Error(`context stackName: expected a non-empty string, got ${JSON.stringify(stackName)}`);
  }
  return {
    protectedBuckets: listContext(app, 'protectedBuckets'),
    databaseSecretArns: listContext(app, 'databaseSecretArns'),
    ...(typeof stackName === 'string' ? { stackName: stackName.trim() } : {}),
  };
}

/**
 * Builds the etl-rollback app into `app`: the one stack, configured from context (props override context), and
 * cdk-nag's AwsSolutions checks as a validation plugin, so every synth fails on an unacknowledged finding.
 */
export function buildEtlRollbackApp(app: App, overrides: EtlRollbackStackProps = {}): EtlRollbackStack {
  const context = readContext(app);
  const stack = new EtlRollbackStack(app, STACK_ID, {
    description: 'etl-rollback: restore points before ETL deploys, staged and verified rollback',
    ...(context.stackName ? { stackName: context.stackName } : {}),
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
    terminationProtection: true,
    protectedBuckets: context.protectedBuckets,
    databaseSecretArns: context.databaseSecretArns,
    ...overrides,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return stack;
}

function listContext(app: App, key: string): string[] {
  const value = app.node.tryGetContext(key) as unknown;
  if (value === undefined || value === null) return [];
  const items = typeof value === 'string' ? value.split(',') : value;
  if (!Array.isArray(items) || items.some((item) => typeof item !== 'string')) {
    throw new Error(`context ${key}: expected a comma-separated string or an array of strings, got ${JSON.stringify(value)}`);
  }
  return (items as string[]).map((item) => item.trim()).filter((item) => item !== '');
}
