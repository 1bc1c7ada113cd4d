import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

export interface CustomHandlerAccessProps {
  /**
   * The Lambda functions of the `custom` units' handlers (`handler.lambdaArn` in the manifests), as full function ARNs,
   * unqualified or with a version or alias: exactly what the manifests name (IAM matches a qualified ARN only as such).
   */
  readonly functionArns: readonly string[];
  /** The roles of the functions that call a handler: capture, dry run, restore and the gate. */
  readonly invokerRoles: readonly IRole[];
}

export const CUSTOM_HANDLER_ACTIONS = ['lambda:InvokeFunction'];

/** A Lambda function ARN; no wildcards (the same shape the manifest's `handler.lambdaArn` accepts). */
const FUNCTION_ARN = /^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$/;

export function parseFunctionArn(text: string, path: string): string {
  const arn = text.trim();
  if (!FUNCTION_ARN.test(arn)) {
    throw new Error(`${path}: "${text}" is not a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>[:<version or alias>], no wildcards)`);
  }
  return arn;
}

/**
 * The `custom` units' handlers, called by the Capture unit, Describe changes, Restore unit and Verify stage functions
 * with the AWS SDK (see core/adapters/custom.ts): `lambda:InvokeFunction` on exactly the configured function ARNs, for
 * those four roles only. Nothing is granted when no function is named.
 */
export class CustomHandlerAccess extends Construct {
  readonly policy?: Policy;
  readonly functionArns: readonly string[];

  constructor(scope: Construct, id: string, props: CustomHandlerAccessProps) {
    super(scope, id);
    this.functionArns = [...new Set(props.functionArns.map((arn, i) => parseFunctionArn(arn, `customHandlerArns[${i}]`)))];
    if (this.functionArns.length === 0) return;
    this.policy = new Policy(this, 'Invoke', {
      statements: [new PolicyStatement({ sid: 'InvokeCustomHandlers', effect: Effect.ALLOW, actions: CUSTOM_HANDLER_ACTIONS, resources: [...this.functionArns] })],
      roles: [...props.invokerRoles],
    });
  }
}
