import { Stack } from 'aws-cdk-lib';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { CfnSchedule } from 'aws-cdk-lib/aws-scheduler';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/**
 * One pipeline's scheduled rollback drill: the manifest's `drill: { schedule, deployment }`, given to the stack as
 * context (`-c drills='[{"pipeline":"orders","schedule":"cron(0 3 ? * SUN *)"}]'`): the stack does not read manifests.
 */
export const drillScheduleSchema = z.strictObject({
  pipeline: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest (lowercase letters, digits, "_", "-")'),
  schedule: z
    .string()
    .regex(/^(?:cron\((\S+ ){5}\S+\)|rate\([1-9][0-9]* (?:minute|minutes|hour|hours|day|days)\))$/, 'must be an EventBridge Scheduler expression: "cron(<6 fields>)" or "rate(<n> <minutes|hours|days>)"'),
  deployment: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/, 'must be "latest" or a deployment id').default('latest'),
});
export type DrillScheduleConfig = z.infer<typeof drillScheduleSchema>;
export type DrillScheduleInput = z.input<typeof drillScheduleSchema>;

export function parseDrillSchedules(value: unknown, what = 'drills'): DrillScheduleConfig[] {
  const parsed = z
    .array(drillScheduleSchema)
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((d, i) => {
        if (seen.has(d.pipeline)) ctx.addIssue({ code: 'custom', path: [i, 'pipeline'], message: `pipeline "${d.pipeline}" has two drill schedules` });
        seen.add(d.pipeline);
      });
    })
    .safeParse(value);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => `  ${what}${issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${issue.message}`);
  throw new Error(`${what} is invalid:\n${lines.join('\n')}`);
}

/** The drill machine's input a schedule sends (the same shape `etl-rollback drill` sends, core/workflow/drill-request.ts). */
export function scheduledDrillInput(drill: DrillScheduleConfig): string {
  return JSON.stringify({
    pipeline: drill.pipeline,
    deploymentId: drill.deployment,
    requestedBy: 'eventbridge-scheduler',
    reason: `scheduled drill (${drill.schedule})`,
    trigger: { kind: 'eventbridge', source: 'aws.scheduler', detailType: 'Scheduled Drill', summary: `drill schedule ${drill.schedule} of pipeline ${drill.pipeline}` },
  });
}

export interface DrillSchedulesProps {
  readonly drillStateMachine: IStateMachine;
  readonly drills: readonly DrillScheduleInput[];
}

/**
 * An EventBridge Scheduler schedule per pipeline that starts the drill state machine with that pipeline's input. The
 * schedules share one role, which may start the drill machine and nothing else (not the rollback machine: a schedule
 * can never roll anything back).
 */
export class DrillSchedules extends Construct {
  readonly schedulerRole: Role;
  readonly schedules: ReadonlyMap<string, CfnSchedule>;

  constructor(scope: Construct, id: string, props: DrillSchedulesProps) {
    super(scope, id);
    const drills = parseDrillSchedules(props.drills);
    this.schedulerRole = new Role(this, 'SchedulerRole', {
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } } }),
      description: 'etl-rollback: the drill schedules start the drill state machine',
    });
    this.schedulerRole.addToPrincipalPolicy(
      new PolicyStatement({ sid: 'StartDrill', effect: Effect.ALLOW, actions: ['states:StartExecution'], resources: [props.drillStateMachine.stateMachineArn] }),
    );
    const schedules = new Map<string, CfnSchedule>();
    for (const drill of drills) {
      schedules.set(
        drill.pipeline,
        new CfnSchedule(this, `Drill-${drill.pipeline}`, {
          description: `etl-rollback: rollback drill of pipeline ${drill.pipeline} (deployment ${drill.deployment}) into scratch targets`,
          scheduleExpression: drill.schedule,
          scheduleExpressionTimezone: 'UTC',
          flexibleTimeWindow: { mode: 'FLEXIBLE', maximumWindowInMinutes: 15 },
          target: {
            arn: props.drillStateMachine.stateMachineArn,
            roleArn: this.schedulerRole.roleArn,
            input: scheduledDrillInput(drill),
            // A drill missed by more than an hour waits for the next one: it measures recovery, not a deadline.
            retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 3600 },
          },
        }),
      );
    }
    this.schedules = schedules;
  }
}

/**
 * The drill schedules (and scratch buckets) the manifests themselves set: each file's `pipeline` and `drill` fields, read
 * at synth (context `manifests`), so the schedule is written once, in the manifest. Only these two fields are read here;
 * `etl-rollback validate` checks the whole manifest.
 */
export function drillsFromManifests(files: readonly { path: string; text: string }[]): { drills: DrillScheduleInput[]; scratchBuckets: string[] } {
  const drills: DrillScheduleInput[] = [];
  const scratchBuckets: string[] = [];
  for (const { path, text } of files) {
    const doc = manifestDrillSchema.safeParse(parseYaml(text));
    if (!doc.success) {
      throw new Error(`context manifests: ${path}: ${doc.error.issues.map((i) => `${i.path.join('.') || '(manifest)'}: ${i.message}`).join('; ')}`);
    }
    const { pipeline, drill } = doc.data;
    if (!drill) continue;
    drills.push({ pipeline, schedule: drill.schedule, ...(drill.deployment ? { deployment: drill.deployment } : {}) });
    if (drill.scratchBucket) scratchBuckets.push(drill.scratchBucket);
  }
  return { drills, scratchBuckets };
}

/** The two fields of a manifest the stack reads; the rest is the CLI's and the handlers' to validate. */
const manifestDrillSchema = z.object({
  pipeline: z.string(),
  drill: z.object({ schedule: z.string(), deployment: z.string().optional(), scratchBucket: z.string().optional() }).optional(),
});
