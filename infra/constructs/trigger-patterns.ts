/**
 * The EventBridge event patterns of the rollback triggers, in the JSON form EventBridge stores (`detail-type`, not
 * CDK's `detailType`). Pure functions with no CDK or core imports: the Triggers construct turns them into rules, and
 * the tests put the very same patterns on rules with SQS targets on moto to prove what they match.
 */

export interface EventPatternJson {
  source: string[];
  'detail-type': string[];
  detail: Record<string, unknown>;
}

/** Step Functions execution statuses that mean the ETL run went wrong. */
export const FAILED_EXECUTION_STATUSES = ['FAILED', 'TIMED_OUT', 'ABORTED'] as const;

/** Source and detail-type of the custom event a deploy tool sends when a deploy fails. */
export const DEPLOYMENT_FAILED_SOURCE = 'etl.deployments';
export const DEPLOYMENT_FAILED_DETAIL_TYPE = 'Deployment Failed';

/** The pipeline's ETL state machine(s) ended an execution FAILED, TIMED_OUT or ABORTED. */
export function etlExecutionFailedPattern(stateMachineArns: readonly string[]): EventPatternJson {
  return {
    source: ['aws.states'],
    'detail-type': ['Step Functions Execution Status Change'],
    detail: { status: [...FAILED_EXECUTION_STATUSES], stateMachineArn: [...stateMachineArns] },
  };
}

/** One of the pipeline's CloudWatch alarms entered ALARM. */
export function alarmPattern(alarmNames: readonly string[]): EventPatternJson {
  return {
    source: ['aws.cloudwatch'],
    'detail-type': ['CloudWatch Alarm State Change'],
    detail: { alarmName: [...alarmNames], state: { value: ['ALARM'] } },
  };
}

/** A deploy tool reported a failed deploy of this pipeline: `{"pipeline", "deploymentId"?, "reason"?}`. */
export function deploymentFailedPattern(pipeline: string): EventPatternJson {
  return {
    source: [DEPLOYMENT_FAILED_SOURCE],
    'detail-type': [DEPLOYMENT_FAILED_DETAIL_TYPE],
    detail: { pipeline: [pipeline] },
  };
}

/**
 * The input transformer template of every trigger target: the rule's pipeline and the whole event as EventBridge
 * received it (`<aws.events.event.json>`, a predefined variable of input templates), i.e. `{"pipeline", "event"}`.
 */
export function triggerInputTemplate(pipeline: string): string {
  return `{"pipeline":${JSON.stringify(pipeline)},"event":<aws.events.event.json>}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Change capture (s3-prefix units with `capture: change-log`; core/workflow/change-capture.ts)
// ---------------------------------------------------------------------------------------------------------------------

/** Where a pipeline's captured prefixes live: a bucket and the prefixes of its change-log units there. */
export interface CaptureLocation {
  bucket: string;
  prefixes: string[];
}

/** What S3 sends to EventBridge for the changes a change log records. */
export const S3_CHANGE_DETAIL_TYPES = ['Object Created', 'Object Deleted'] as const;

/**
 * S3 events of the pipeline's captured prefixes: created objects (every ObjectCreated:* call) and deleted ones
 * (ObjectRemoved:*: delete markers created and versions permanently deleted). One bucket: its name and key prefixes;
 * several: one `$or` branch per bucket, so that a prefix of one bucket never admits the same prefix in another.
 */
export function changeCapturePattern(locations: readonly CaptureLocation[]): Record<string, unknown> {
  const detailOf = (l: CaptureLocation) => ({ bucket: { name: [l.bucket] }, object: { key: [...new Set(l.prefixes)].sort().map((prefix) => ({ prefix })) } });
  const base = { source: ['aws.s3'], 'detail-type': [...S3_CHANGE_DETAIL_TYPES] };
  if (locations.length === 1) return { ...base, detail: detailOf(locations[0]!) };
  return { ...base, $or: locations.map((l) => ({ detail: detailOf(l) })) };
}

/** Detail-type of the event a deploy tool sends when a deploy finished (core/workflow/change-capture.ts reads it). */
export const DEPLOYMENT_COMPLETED_DETAIL_TYPE = 'Deployment Completed';

/** A deploy tool reported that a deploy of this pipeline finished: `{"pipeline", "deploymentId"}`; its change capture stops. */
export function deploymentCompletedPattern(pipeline: string): EventPatternJson {
  return {
    source: [DEPLOYMENT_FAILED_SOURCE],
    'detail-type': [DEPLOYMENT_COMPLETED_DETAIL_TYPE],
    detail: { pipeline: [pipeline] },
  };
}
