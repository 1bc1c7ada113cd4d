import { Stack, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/**
 * cdk-nag 3 acknowledgments. cdk-nag 3 removed `NagSuppressions`; a rule is acknowledged on a construct with
 * `Validations.of(construct).acknowledge({ id, reason })`, and it applies to that construct's CfnResources and their
 * descendants only. Every acknowledgment here names one rule, or one finding of a rule (`RuleId[FindingId]`), and
 * says why it is acceptable.
 */
export function acknowledge(scope: IConstruct, id: string, reason: string): void {
  Validations.of(scope).acknowledge({ id, reason });
}

/**
 * What every function of this project is acknowledged for: X-Ray tracing's grant on "*" (on its role) and the Node.js
 * 22 runtime (on the function).
 */
export function acknowledgeTracedNode22Function(role: IConstruct, fn: IConstruct): void {
  acknowledge(
    role,
    'AwsSolutions-IAM5[Resource::*]',
    'X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords do not support resource-level ' +
      'permissions, so CDK grants them on "*". No other statement of this role uses "*".',
  );
  acknowledge(
    fn,
    'AwsSolutions-L1',
    'Node.js 22 is the runtime this project pins (package.json devDependency "node": 22, engines >=22) and tests on; ' +
      'the Lambda runtime moves to a newer major together with that pin, not on its own. nodejs22.x is supported.',
  );
}

/**
 * The AwsSolutions-IAM5 finding id for one wildcard resource, spelled the way cdk-nag spells it: the resource is
 * resolved in its stack and CloudFormation references are flattened (`<Logical.Arn>/*`, `arn:<AWS::Partition>:…`).
 * Acknowledging this exact finding, rather than IAM5 as a whole, keeps any other wildcard in the same policy reported.
 */
export function iam5ResourceFinding(scope: IConstruct, resource: string): string {
  return `AwsSolutions-IAM5[Resource::${flattenCfnReference(Stack.of(scope).resolve(resource))}]`;
}

/** The AwsSolutions-IAM5 finding id for one wildcard action (e.g. `xray:Put*`). */
export function iam5ActionFinding(action: string): string {
  return `AwsSolutions-IAM5[Action::${action}]`;
}

function flattenCfnReference(node: unknown): string {
  if (node === undefined) return '';
  if (typeof node === 'string') return node.replace(/\$\{/g, '<').replace(/\}/g, '>');
  if (isRecord(node)) {
    const join = node['Fn::Join'];
    if (Array.isArray(join)) {
      const [delimiter, items] = join as [string, unknown[]];
      return items.map(flattenCfnReference).join(delimiter);
    }
    if ('Fn::Sub' in node) return flattenCfnReference(node['Fn::Sub']);
    const getAtt = node['Fn::GetAtt'];
    if (Array.isArray(getAtt)) return `<${flattenCfnReference(getAtt[0])}.${flattenCfnReference(getAtt[1])}>`;
    if ('Fn::ImportValue' in node) return flattenCfnReference(node['Fn::ImportValue']);
    if ('Ref' in node) return `<${flattenCfnReference(node.Ref)}>`;
  }
  return JSON.stringify(node);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
