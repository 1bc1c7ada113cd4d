import { ArnFormat, Stack } from 'aws-cdk-lib';
import { Effect, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';

/** The EventBridge managed rule Step Functions uses to follow an execution started with `startExecution.sync`. */
export const SYNC_MANAGED_RULE = 'StepFunctionsGetEventsForStepFunctionsExecutionRule';

const STATE_MACHINE_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;

export interface ReplayAccessProps {
  /** The rollback state machine, whose "Replay pipeline" task starts the pipelines' own ETL state machines. */
  readonly rollback: StateMachine;
  /** The pipelines' ETL state machines a rollback may replay (manifest `replay.stateMachineArn`): full ARNs, no wildcards. */
  readonly replayStateMachines: readonly string[];
}

/**
 * What `arn:aws:states:::states:startExecution.sync:2` needs, on exactly the state machines configured at synth:
 * `states:StartExecution` on each, `states:DescribeExecution` / `states:StopExecution` on their executions, and the
 * EventBridge managed rule Step Functions keeps to learn that an execution ended. None configured: nothing granted (a
 * manifest with `replay` then fails its replay with AccessDenied, after every stage verified).
 */
export class ReplayAccess extends Construct {
  readonly stateMachineArns: readonly string[];

  constructor(scope: Construct, id: string, props: ReplayAccessProps) {
    super(scope, id);
    props.replayStateMachines.forEach((arn, i) => {
      if (!STATE_MACHINE_ARN.test(arn)) throw new Error(`replayStateMachines[${i}]: "${arn}" must be a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>), no wildcards`);
    });
    this.stateMachineArns = [...props.replayStateMachines];
    if (this.stateMachineArns.length === 0) return;

    const stack = Stack.of(this);
    const role = props.rollback.role;
    role.addToPrincipalPolicy(new PolicyStatement({ sid: 'ReplayStart', effect: Effect.ALLOW, actions: ['states:StartExecution'], resources: [...this.stateMachineArns] }));
    const executions = this.stateMachineArns.map((arn) => `${arn.replace(':stateMachine:', ':execution:')}:*`);
    role.addToPrincipalPolicy(
      new PolicyStatement({ sid: 'ReplayFollow', effect: Effect.ALLOW, actions: ['states:DescribeExecution', 'states:StopExecution'], resources: executions }),
    );
    const rule = stack.formatArn({ service: 'events', resource: 'rule', resourceName: SYNC_MANAGED_RULE, arnFormat: ArnFormat.SLASH_RESOURCE_NAME });
    role.addToPrincipalPolicy(
      new PolicyStatement({ sid: 'ReplaySyncRule', effect: Effect.ALLOW, actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'], resources: [rule] }),
    );
    for (const arn of executions) {
      acknowledge(
        props.rollback,
        iam5ResourceFinding(props.rollback, arn),
        'Executions of one configured replay state machine (`execution:<machine>:*`): the rollback names each replay ' +
          'after its run, so the execution names are not known at synth; StartExecution is granted on the machine ARN only.',
      );
    }
  }
}
