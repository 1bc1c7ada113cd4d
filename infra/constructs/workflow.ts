import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ArnFormat, Stack } from 'aws-cdk-lib';
import { Effect, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { DefinitionBody, LogLevel, StateMachine, StateMachineType } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';

/** `${Name}` placeholders of a definition file, in order of first appearance, each once. */
export function definitionPlaceholders(definition: string): string[] {
  return [...new Set([...definition.matchAll(/\$\{([^}]*)\}/g)].map((m) => m[1] ?? ''))];
}

interface AslStates {
  [name: string]: { Type?: string; ItemProcessor?: Record<string, unknown>; Branches?: { States: AslStates }[] };
}

/**
 * A definition with every Distributed Map processor that names its definition file (`ItemProcessor.DefinitionFile`,
 * relative to the parent file's folder) replaced by that file's StartAt and States — the file the local runner runs as
 * the child. `distributed`: whether the definition has a DISTRIBUTED Map (its role then needs to run child executions).
 * A definition without such a processor is returned byte for byte.
 */
export function composeDefinition(text: string, file: string): { definition: string; distributed: boolean } {
  const parsed = JSON.parse(text) as { States: AslStates };
  let composed = false;
  let distributed = false;
  const walk = (states: AslStates) => {
    for (const state of Object.values(states)) {
      for (const b of state.Branches ?? []) walk(b.States);
      const processor = state.ItemProcessor;
      if (state.Type !== 'Map' || !processor) continue;
      if ((processor.ProcessorConfig as { Mode?: string } | undefined)?.Mode === 'DISTRIBUTED') distributed = true;
      const childFile = processor.DefinitionFile;
      if (typeof childFile === 'string') {
        const childPath = resolve(dirname(file), childFile);
        const child = JSON.parse(readFileSync(childPath, 'utf8')) as { StartAt: string; States: AslStates };
        state.ItemProcessor = { ProcessorConfig: processor.ProcessorConfig, StartAt: child.StartAt, States: child.States };
        composed = true;
      }
      const inner = state.ItemProcessor?.States as AslStates | undefined;
      if (inner) walk(inner);
    }
  };
  walk(parsed.States);
  return { definition: composed ? `${JSON.stringify(parsed, null, 2)}\n` : text, distributed };
}

export interface WorkflowProps {
  /** Short name: `snapshot`, `rollback`. */
  readonly name: string;
  /** Path of the ASL (JSONPath) definition file, with `${…FunctionArn}` placeholders. */
  readonly definitionFile: string;
  /** Resolves a placeholder name to the function whose ARN fills it; undefined if the name is unknown. */
  readonly resolveFunction: (placeholder: string) => IFunction | undefined;
  /** @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
}

/**
 * A STANDARD state machine whose definition is the file as written — the same file the local runner executes. Its
 * `${…}` placeholders are filled by CloudFormation (DefinitionSubstitutions) with the ARNs of the functions they name;
 * a placeholder that names no function fails the synth. The role may invoke exactly those functions.
 */
export class Workflow extends Construct {
  readonly stateMachine: StateMachine;
  readonly logGroup: LogGroup;
  /** The functions the definition references, by placeholder. */
  readonly functions: ReadonlyMap<string, IFunction>;

  constructor(scope: Construct, id: string, props: WorkflowProps) {
    super(scope, id);

    let definition: string;
    let distributed: boolean;
    try {
      ({ definition, distributed } = composeDefinition(readFileSync(props.definitionFile, 'utf8'), props.definitionFile));
    } catch (error) {
      throw new Error(`${props.definitionFile}: not valid JSON (${(error as Error).message})`, { cause: error });
    }

    const functions = new Map<string, IFunction>();
    const unresolved: string[] = [];
    for (const placeholder of definitionPlaceholders(definition)) {
      const fn = props.resolveFunction(placeholder);
      if (fn) functions.set(placeholder, fn);
      else unresolved.push(placeholder);
    }
    if (unresolved.length > 0) {
      throw new Error(
        `${props.definitionFile}: no function for ${unresolved.map((p) => `\${${p}}`).join(', ')}; every placeholder ` +
          'must name a handler ARN (see HANDLER_SPECS in infra/constructs/handlers.ts)',
      );
    }
    this.functions = functions;

    // The /aws/vendedlogs/ prefix keeps CloudWatch Logs resource policies for vended log delivery small.
    this.logGroup = new LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/${Stack.of(this).stackName}-${props.name}`,
      retention: props.logRetention ?? RetentionDays.THREE_MONTHS,
    });

    // A Distributed Map runs child executions of this very state machine, so its role names its own ARN: a fixed name
    // (rather than the machine's ARN attribute, which would make the role's policy depend on the machine it belongs to).
    const stateMachineName = distributed ? `${Stack.of(this).stackName}-${props.name}` : undefined;

    this.stateMachine = new StateMachine(this, 'StateMachine', {
      ...(stateMachineName ? { stateMachineName } : {}),
      comment: `etl-rollback ${props.name}`,
      stateMachineType: StateMachineType.STANDARD,
      // Inline (DefinitionString) rather than DefinitionBody.fromFile: fromFile uploads the file as an S3 asset, which
      // hides the definition from the template, from `cdk diff` and from template tests. The content is the file
      // byte for byte (a Distributed Map processor naming its DefinitionFile gets that file's states composed in, see
      // composeDefinition); CloudFormation fills the same ${…} placeholders the local runner fills.
      definitionBody: DefinitionBody.fromString(definition),
      definitionSubstitutions: Object.fromEntries([...functions].map(([name, fn]) => [name, fn.functionArn])),
      // Every state transition is logged, without execution data: inputs and outputs carry pipeline state, keys and
      // error causes that belong in the ledger and the state bucket, not in a log group with wider read access.
      logs: { destination: this.logGroup, level: LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });

    // The definition invokes functions by their unqualified ARN ("Resource": "${…FunctionArn}"): grant exactly those
    // ARNs (grantInvoke would add `<arn>:*` for every version and alias as well).
    this.stateMachine.addToRolePolicy(
      new PolicyStatement({
        sid: 'InvokeDefinitionFunctions',
        effect: Effect.ALLOW,
        actions: ['lambda:InvokeFunction'],
        resources: [...functions.values()].map((fn) => fn.functionArn),
      }),
    );

    if (stateMachineName) {
      const stack = Stack.of(this);
      const own = stack.formatArn({ service: 'states', resource: 'stateMachine', resourceName: stateMachineName, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
      const children = stack.formatArn({ service: 'states', resource: 'execution', resourceName: `${stateMachineName}/*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
      // Distributed Map: start the child executions (of this machine) and follow or stop them.
      this.stateMachine.addToRolePolicy(
        new PolicyStatement({ sid: 'DistributedMapStart', effect: Effect.ALLOW, actions: ['states:StartExecution'], resources: [own] }),
      );
      this.stateMachine.addToRolePolicy(
        new PolicyStatement({ sid: 'DistributedMapChildren', effect: Effect.ALLOW, actions: ['states:DescribeExecution', 'states:StopExecution'], resources: [children] }),
      );
      acknowledge(
        this.stateMachine,
        iam5ResourceFinding(this.stateMachine, children),
        'Distributed Map child executions of this state machine only (`execution:<this machine>/*`): their names are made ' +
          'by Step Functions at run time (map run label and id), so they cannot be listed in advance.',
      );
    }

    acknowledge(
      this.stateMachine,
      'AwsSolutions-IAM5[Resource::*]',
      'Added by CDK for logging and tracing, and not narrowable: CloudWatch Logs vended log delivery ' +
        '(logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, DeleteLogDelivery, ListLogDeliveries, ' +
        'PutResourcePolicy, DescribeResourcePolicies, DescribeLogGroups) and X-Ray (PutTraceSegments, ' +
        'PutTelemetryRecords, GetSamplingRules, GetSamplingTargets) support no resource-level permissions. Lambda ' +
        'invocation is granted on the named function ARNs only.',
    );
  }
}
