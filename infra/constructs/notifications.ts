import { Arn, ArnFormat, Stack } from 'aws-cdk-lib';
import { Effect, PolicyStatement, type IRole } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';

/** A handler that notifies: its function (for the environment) and its role (for the grants). */
export interface Publisher {
  readonly fn: IFunction & { addEnvironment(key: string, value: string): unknown };
  readonly role: IRole;
}

export interface NotificationsProps {
  /** Handlers that announce what a run does (plan, verify, finish, record failure, request approval). */
  readonly publishers: readonly Publisher[];
  /** Handlers that pause and resume the pipelines' rules. */
  readonly triggerControllers: readonly Publisher[];
  /**
   * The pipelines' EventBridge rules a rollback may pause (the manifests' `policy.pause.rules`): `name` for the
   * default bus, `bus/name` otherwise. Empty: no rule may be paused (a manifest naming one fails at its pause).
   * @default []
   */
  readonly pausableRules?: readonly string[];
  /**
   * The pipelines' EventBridge Scheduler schedules a rollback may pause (the manifests' `policy.pause.schedules`):
   * `name` in the default group, `group/name` otherwise.
   * @default []
   */
  readonly pausableSchedules?: readonly string[];
  /**
   * The roles those schedules run their targets as. UpdateSchedule (the only way to disable a schedule) sends the whole
   * definition back, its role included, so the caller needs iam:PassRole on it; required when `pausableSchedules` is set.
   * @default []
   */
  readonly scheduleTargetRoleArns?: readonly string[];
  /** Bus for the rollback's own events (`source: etl.rollback`). @default 'default' */
  readonly eventBusName?: string;
}

const RULE = /^(?:([/.\-_A-Za-z0-9]{1,256})\/)?([.\-_A-Za-z0-9]{1,64})$/;
const SCHEDULE = /^(?:([.\-_A-Za-z0-9]{1,64})\/)?([.\-_A-Za-z0-9]{1,64})$/;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/;

/**
 * What a rollback tells people and other systems, and the pipelines' rules it may pause. An SNS topic, encrypted with
 * its own KMS key (rotated) and refusing non-TLS publishers; `sns:Publish` and the key's data-key actions for the
 * handlers that announce; `events:PutEvents` on the one bus; `events:DescribeRule/DisableRule/EnableRule` on exactly
 * the rules named in `pausableRules`; `scheduler:GetSchedule/UpdateSchedule` on exactly the schedules named in
 * `pausableSchedules`, with `iam:PassRole` on their target roles to Scheduler only. The topic ARN and the bus reach
 * the handlers through their environment (ETL_ROLLBACK_TOPIC_ARN, ETL_ROLLBACK_EVENT_BUS).
 */
export class Notifications extends Construct {
  readonly topic: Topic;
  readonly key: Key;
  readonly eventBusArn: string;
  readonly ruleArns: readonly string[];
  readonly scheduleArns: readonly string[];

  constructor(scope: Construct, id: string, props: NotificationsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const busName = props.eventBusName ?? 'default';

    this.key = new Key(this, 'TopicKey', { enableKeyRotation: true, description: 'etl-rollback notifications topic' });
    this.topic = new Topic(this, 'Topic', { displayName: 'etl-rollback', masterKey: this.key, enforceSSL: true });
    this.eventBusArn = stack.formatArn({ service: 'events', resource: 'event-bus', resourceName: busName });
    this.ruleArns = (props.pausableRules ?? []).map((entry, i) => {
      const m = RULE.exec(entry);
      if (!m || entry.includes('*')) throw new Error(`pausableRules[${i}]: "${entry}" must be a rule name or "bus/name" (no wildcards)`);
      const [, bus, name] = m;
      return stack.formatArn({ service: 'events', resource: 'rule', resourceName: bus && bus !== 'default' ? `${bus}/${name}` : name, arnFormat: ArnFormat.SLASH_RESOURCE_NAME });
    });

    this.scheduleArns = (props.pausableSchedules ?? []).map((entry, i) => {
      const m = SCHEDULE.exec(entry);
      if (!m || entry.includes('*')) throw new Error(`pausableSchedules[${i}]: "${entry}" must be a schedule name or "group/name" (no wildcards)`);
      const [, group, name] = m;
      return stack.formatArn({ service: 'scheduler', resource: 'schedule', resourceName: `${group ?? 'default'}/${name}`, arnFormat: ArnFormat.SLASH_RESOURCE_NAME });
    });
    const passRoles = [...(props.scheduleTargetRoleArns ?? [])];
    passRoles.forEach((arn, i) => {
      if (!ROLE_ARN.test(arn)) throw new Error(`scheduleTargetRoleArns[${i}]: "${arn}" must be an IAM role ARN (arn:aws:iam::<account>:role/<name>, no wildcards)`);
    });
    if (this.scheduleArns.length > 0 && passRoles.length === 0) {
      throw new Error(
        'pausableSchedules is set but scheduleTargetRoleArns is empty: disabling a schedule (UpdateSchedule) passes its target role, so name the roles the schedules run as',
      );
    }

    for (const { fn, role } of props.publishers) {
      fn.addEnvironment('ETL_ROLLBACK_TOPIC_ARN', this.topic.topicArn);
      fn.addEnvironment('ETL_ROLLBACK_EVENT_BUS', busName);
      role.addToPrincipalPolicy(new PolicyStatement({ sid: 'PublishNotifications', effect: Effect.ALLOW, actions: ['sns:Publish'], resources: [this.topic.topicArn] }));
      role.addToPrincipalPolicy(
        new PolicyStatement({ sid: 'EncryptNotifications', effect: Effect.ALLOW, actions: ['kms:GenerateDataKey', 'kms:Decrypt'], resources: [this.key.keyArn] }),
      );
      role.addToPrincipalPolicy(new PolicyStatement({ sid: 'PutRollbackEvents', effect: Effect.ALLOW, actions: ['events:PutEvents'], resources: [this.eventBusArn] }));
    }
    if (this.ruleArns.length > 0) {
      for (const { role } of props.triggerControllers) {
        role.addToPrincipalPolicy(
          new PolicyStatement({
            sid: 'PausePipelineRules',
            effect: Effect.ALLOW,
            actions: ['events:DescribeRule', 'events:DisableRule', 'events:EnableRule'],
            resources: [...this.ruleArns],
          }),
        );
      }
    }
    if (this.scheduleArns.length > 0) {
      for (const { role } of props.triggerControllers) {
        role.addToPrincipalPolicy(
          new PolicyStatement({ sid: 'PausePipelineSchedules', effect: Effect.ALLOW, actions: ['scheduler:GetSchedule', 'scheduler:UpdateSchedule'], resources: [...this.scheduleArns] }),
        );
        role.addToPrincipalPolicy(
          new PolicyStatement({
            sid: 'PassScheduleTargetRoles',
            effect: Effect.ALLOW,
            actions: ['iam:PassRole'],
            resources: passRoles,
            conditions: { StringEquals: { 'iam:PassedToService': 'scheduler.amazonaws.com' } },
          }),
        );
      }
    }
  }
}

/** `arn:…:rule/<name>` or `arn:…:rule/<bus>/<name>`: the rule's name, for tests and messages. */
export function ruleNameOf(arn: string): string {
  return Arn.split(arn, ArnFormat.SLASH_RESOURCE_NAME).resourceName ?? arn;
}
