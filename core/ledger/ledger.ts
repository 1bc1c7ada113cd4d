import { ConditionalCheckFailedException, CreateTableCommand, DescribeTableCommand, type DynamoDBClient, ResourceInUseException, UpdateTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, TransactWriteCommand, GetCommand, PutCommand, QueryCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { LockHeldError, RestorePointMissingError } from '../errors.ts';
import type { Changes, Check, RestorePoint } from '../adapters/types.ts';
import { runEstimateSchema, type RunEstimate } from '../plan/estimate.ts';
import { HISTORY_RUNS, throughputSampleSchema, type ThroughputSample } from '../plan/throughput.ts';

/**
 * The ledger: one DynamoDB table (pk/sk) holding deployments, their restore points, rollback runs with
 * their steps, and one lock item per pipeline. Every write is either a conditional write or an idempotent
 * overwrite of the same facts, so a retried Lambda converges to the same items.
 *
 *   PIPELINE#<pipeline>             DEPLOYMENT#<id>          deployment
 *   DEPLOYMENT#<pipeline>#<id>      POINT#<unit>             restore point of one unit
 *   RUN#<runId>                     RUN                      rollback run
 *   RUN#<runId>                     STEP#<stage>#<unit>      what one unit's restore did and how it verified
 *   LOCK#<pipeline>                 LOCK                     the pipeline's lock (expiresAt = TTL)
 *   TRIGGER#<pipeline>              EVENT#<time>#<eventId>   what an EventBridge trigger did (started, refused, ...)
 *   RUN#<runId>                     APPROVAL                 the run's approval request (task token) and its decision
 *   RUN#<runId>                     CANCEL                   a request to cancel the run (who, why, when): checked at its safe points
 *   RUN#<runId>                     PAUSE#<kind>#<in>#<name> a pipeline trigger the run paused (rule on a bus, schedule in a group), with the state it had
 *   PIPELINE#<pipeline>             RUN#<startedAt>#<runId>  run index: the pipeline's runs in time order (history without a scan)
 *   DEPLOYMENT#<pipeline>#<id>      RELEASE                  what releasing the deployment's restore points deleted
 *   THROUGHPUT#<pipeline>           RUN#<startedAt>#<runId>  how fast a successful run restored each unit (for estimates)
 */

/**
 * SNAPSHOTTING: the units are being captured; the deploy must wait. IN_PLACE: every unit is recording (a copy-on-write
 * table's triggers log every change), so the deploy may start, while the seal (count and checksum of the state as it was)
 * is still being read; a rollback waits for READY. READY: sealed, the deployment can be rolled back.
 */
export type DeploymentStatus = 'SNAPSHOTTING' | 'IN_PLACE' | 'READY' | 'FAILED' | 'ROLLING_BACK' | 'ROLLED_BACK' | 'ROLLBACK_FAILED' | 'RELEASED';
/**
 * REJECTED: an approver said no, or nobody decided in time (the run's policy asked for approval); nothing was touched.
 * CANCELLED: someone asked the run to stop (`etl-rollback cancel`, Ctrl-C, StopExecution); it stopped at a safe point
 * (or, stopped at once, mid-stage) and went through the failure path's cleanup; `--resume` continues it.
 */
export type RunStatus = 'PLANNED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'REFUSED' | 'DRY_RUN' | 'REJECTED' | 'CANCELLED';

/** A request to cancel a run, recorded once (the first request wins; later ones find it). Times ISO-8601 UTC. */
export interface CancelRequest {
  runId: string;
  requestedBy: string;
  reason: string;
  requestedAt: string;
}

export interface Deployment {
  pipeline: string;
  deploymentId: string;
  status: DeploymentStatus;
  /** State-bucket key of the manifest as it was when the restore points were taken. */
  manifestKey: string;
  units: string[];
  createdAt: string;
  updatedAt: string;
  requestedBy?: string;
  reason?: string;
  error?: ErrorSummary;
  /**
   * Set on a derived deployment: one made at plan time, without a capture before a deploy, from a point in time
   * (`at-<time>`) or from what a run replaced (`undo-<runId>`, core/workflow/undo.ts). Absent on deploys.
   */
  origin?: { kind: 'time'; at: string } | { kind: 'undo'; runId: string };
  /**
   * The name of the snapshot execution that last began capturing it (set by "Register deployment"): a stopped execution
   * is cleaned up only while it is still the one capturing (core/workflow/snapshot.ts, cleanUpStoppedSnapshot).
   */
  snapshotExecution?: string;
}

export interface ErrorSummary {
  name: string;
  message: string;
}

export interface PlannedStage {
  index: number;
  units: string[];
}

/** What started a run: a person (CLI, console) or an EventBridge trigger. Holds nothing that varies between identical events. */
export interface RunTrigger {
  kind: 'manual' | 'eventbridge';
  /** The event's source (`aws.states`, `aws.cloudwatch`, `etl.deployments`). */
  source?: string;
  /** The event's detail-type. */
  detailType?: string;
  /** The trigger in one line. */
  summary?: string;
}

export interface Run {
  runId: string;
  pipeline: string;
  deploymentId: string;
  status: RunStatus;
  dryRun: boolean;
  requested: string[];
  scope: string[];
  stages: PlannedStage[];
  reasons: Record<string, string>;
  requestedBy: string;
  reason: string;
  startedAt: string;
  endedAt?: string;
  error?: ErrorSummary;
  reportKey?: string;
  /** What started the run (absent on runs recorded before it was kept). */
  trigger?: RunTrigger;
  /** The run this one resumes: its plan was taken over, and the units it verified were not restored again. */
  resumedFrom?: string;
  /** The deployment's status when the run was planned: what a run cancelled before it restored anything puts back. */
  deploymentStatusBefore?: DeploymentStatus;
  /**
   * What the run was estimated to cost and take when it was planned: a dry run's own estimate, or, for a rollback, the
   * estimate of the latest dry run of the same deployment and scope (absent when there was none).
   */
  estimate?: RunEstimate;
  /** The pipeline's replay after every stage verified (manifest `replay`): its execution and how it ended. */
  replay?: ReplayRecord;
}

/** A replay execution as the run records it (dates ISO-8601 UTC). */
export interface ReplayRecord {
  stateMachineArn: string;
  executionArn?: string;
  /** RUNNING while the rollback waits for it; then SUCCEEDED, FAILED, TIMED_OUT or ABORTED (Step Functions' statuses). */
  status: string;
  startDate?: string;
  stopDate?: string;
  error?: ErrorSummary;
}

export type StepStatus = 'RESTORED' | 'VERIFIED' | 'VERIFY_FAILED' | 'FAILED';

export interface Step {
  runId: string;
  stage: number;
  unitId: string;
  type: string;
  status: StepStatus;
  changes: Changes;
  writes: number;
  notes: string[];
  keptAt?: string;
  checks?: Check[];
  /** When this run first called the unit's restore (the stage's start is the earliest of its units). */
  startedAt?: string;
  restoredAt?: string;
  verifiedAt?: string;
  /** Not restored by this run: the run it resumes (`Run.resumedFrom`) had already verified the unit. */
  skippedFrom?: string;
}

export interface Lock {
  pipeline: string;
  holder: string;
  deploymentId: string;
  acquiredAt: string;
  expiresAt: number;
}

/** What one EventBridge event did to a pipeline: recorded once per event id, kept for TRIGGER_RECORD_TTL_DAYS. */
export type TriggerOutcomeKind = 'STARTED' | 'ALREADY_STARTED' | 'REFUSED' | 'IGNORED';

export interface TriggerRecord {
  pipeline: string;
  eventId: string;
  eventTime: string;
  source: string;
  detailType: string;
  outcome: TriggerOutcomeKind;
  /** Why it was refused or ignored (`NO_RESTORE_POINT`, `ALREADY_ROLLED_BACK`, ...). */
  code?: string;
  /** Why, in words, when refused or ignored. */
  reason?: string;
  /** The trigger, in one line: what happened, which deployment, what was done. */
  summary: string;
  deploymentId?: string;
  attempt?: number;
  executionName?: string;
  executionArn?: string;
  recordedAt: string;
  expiresAt: number;
}

export const TRIGGER_RECORD_TTL_DAYS = 90;

export type ApprovalStatus = 'PENDING' | 'APPROVED' | 'REJECTED' | 'TIMED_OUT';

/** A run's approval: the task token its state machine waits on, and who decided what, when and why. */
export interface ApprovalRecord {
  runId: string;
  pipeline: string;
  deploymentId: string;
  status: ApprovalStatus;
  /** The Step Functions task token (`$$.Task.Token`) that `approve` / `reject` answer. */
  taskToken: string;
  requestedAt: string;
  /** No decision by then: the run stops (TIMED_OUT). */
  deadline: string;
  timeoutSeconds: number;
  requestedBy: string;
  /** The policy lets the requester approve their own run (`approval.allowSelfApproval`); otherwise a second person must. */
  allowSelfApproval?: boolean;
  decidedBy?: string;
  decidedAt?: string;
  reason?: string;
}

/**
 * A pipeline trigger a run disabled while it restored, and the state it found it in (a DISABLED one stays disabled):
 * an EventBridge rule on a bus, or an EventBridge Scheduler schedule in a group.
 */
export interface PausedTrigger {
  runId: string;
  kind: 'rule' | 'schedule';
  /** The rule's event bus, or the schedule's group. */
  container: string;
  name: string;
  priorState: string;
  pausedAt: string;
  resumedAt?: string;
}

/** `name` on the default bus or group, `container/name` otherwise: how people and IAM name it. */
export function pausedTriggerName(t: Pick<PausedTrigger, 'container' | 'name'>): string {
  return t.container === 'default' ? t.name : `${t.container}/${t.name}`;
}

/** One entry of a pipeline's run index: enough to list history newest first; the run item holds the rest. */
export interface RunIndexEntry {
  pipeline: string;
  runId: string;
  deploymentId: string;
  startedAt: string;
  dryRun: boolean;
  requestedBy: string;
  reason: string;
}

/** What releasing one unit's restore point deleted (or why it could not). */
export interface ReleasedUnit {
  unitId: string;
  type: string;
  /** What was deleted, in words a person can check: `s3://state/restore-points/…/versions.json`, `etl_rollback.rp_…`. */
  deleted: string[];
  error?: ErrorSummary;
}

/** The record of a deployment's release: written once its restore points were released (or the attempt failed). */
export interface ReleaseRecord {
  pipeline: string;
  deploymentId: string;
  releasedAt: string;
  /** The status the deployment had before it was released. */
  previousStatus: DeploymentStatus;
  retentionDays: number;
  /** The release execution (or `cli`) that did it. */
  releasedBy: string;
  units: ReleasedUnit[];
  ok: boolean;
}

/**
 * A change-capture window: from the snapshot of a deployment with `capture: change-log` units until the deploy is
 * declared complete (`etl-rollback complete`, or a `Deployment Completed` event). S3 events of those units' prefixes
 * whose time falls inside it are appended to the units' change logs.
 */
export interface ChangeWindow {
  pipeline: string;
  deploymentId: string;
  openedAt: string;
  /** Absent while the deploy runs. */
  closedAt?: string;
  closedBy?: string;
  /** The units whose changes are logged, with the folder of each one's log in the state bucket. */
  units: { unitId: string; bucket: string; prefix: string; logFolder: string }[];
}

/** Partition-key prefix of change windows: the "Record changes" function reads only these. */
export const CHANGE_WINDOW_PARTITION_PREFIX = 'CHANGES#';

const key = {
  changeWindow: (pipeline: string, id: string) => ({ pk: `${CHANGE_WINDOW_PARTITION_PREFIX}${pipeline}`, sk: `WINDOW#${id}` }),
  deployment: (pipeline: string, id: string) => ({ pk: `PIPELINE#${pipeline}`, sk: `DEPLOYMENT#${id}` }),
  point: (pipeline: string, id: string, unitId: string) => ({ pk: `DEPLOYMENT#${pipeline}#${id}`, sk: `POINT#${unitId}` }),
  run: (runId: string) => ({ pk: `RUN#${runId}`, sk: 'RUN' }),
  step: (runId: string, stage: number, unitId: string) => ({ pk: `RUN#${runId}`, sk: `STEP#${String(stage).padStart(4, '0')}#${unitId}` }),
  lock: (pipeline: string) => ({ pk: `LOCK#${pipeline}`, sk: 'LOCK' }),
  trigger: (pipeline: string, eventTime: string, eventId: string) => ({ pk: `TRIGGER#${pipeline}`, sk: `EVENT#${eventTime}#${eventId}` }),
  approval: (runId: string) => ({ pk: `RUN#${runId}`, sk: 'APPROVAL' }),
  cancel: (runId: string) => ({ pk: `RUN#${runId}`, sk: 'CANCEL' }),
  paused: (runId: string, t: Pick<PausedTrigger, 'kind' | 'container' | 'name'>) => ({ pk: `RUN#${runId}`, sk: `PAUSE#${t.kind}#${t.container}#${t.name}` }),
  runIndex: (pipeline: string, startedAt: string, runId: string) => ({ pk: `PIPELINE#${pipeline}`, sk: `RUN#${startedAt}#${runId}` }),
  release: (pipeline: string, id: string) => ({ pk: `DEPLOYMENT#${pipeline}#${id}`, sk: 'RELEASE' }),
  throughput: (pipeline: string, runStartedAt: string, runId: string) => ({ pk: `THROUGHPUT#${pipeline}`, sk: `RUN#${runStartedAt}#${runId}` }),
};

/** Partition-key prefix of trigger records: the trigger function may write items under it and nowhere else. */
export const TRIGGER_PARTITION_PREFIX = 'TRIGGER#';

function strip<T>(item: Record<string, unknown> | undefined): T | undefined {
  if (!item) return undefined;
  const { pk: _pk, sk: _sk, ...rest } = item;
  return rest as T;
}

export class Ledger {
  private readonly doc: DynamoDBDocumentClient;

  constructor(
    private readonly dynamo: DynamoDBClient,
    readonly tableName: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.doc = DynamoDBDocumentClient.from(dynamo, { marshallOptions: { removeUndefinedValues: true } });
  }

  // ── deployments ────────────────────────────────────────────────────────────

  /** Registers a deployment; a retry with the same deployment returns the existing record unchanged. */
  async registerDeployment(d: Omit<Deployment, 'status' | 'createdAt' | 'updatedAt'>): Promise<{ deployment: Deployment; created: boolean }> {
    const at = this.now().toISOString();
    const deployment: Deployment = { ...d, status: 'SNAPSHOTTING', createdAt: at, updatedAt: at };
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...key.deployment(d.pipeline, d.deploymentId), ...deployment },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return { deployment, created: true };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const existing = await this.getDeployment(d.pipeline, d.deploymentId);
      if (!existing) throw error;
      return { deployment: existing, created: false };
    }
  }

  async getDeployment(pipeline: string, deploymentId: string): Promise<Deployment | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.deployment(pipeline, deploymentId), ConsistentRead: true }));
    return strip<Deployment>(out.Item);
  }

  async requireDeployment(pipeline: string, deploymentId: string): Promise<Deployment> {
    const d = await this.getDeployment(pipeline, deploymentId);
    if (!d) {
      throw new RestorePointMissingError(`pipeline "${pipeline}" has no deployment "${deploymentId}": take a snapshot first (etl-rollback snapshot <manifest> --deployment ${deploymentId})`);
    }
    return d;
  }

  async setDeploymentStatus(pipeline: string, deploymentId: string, status: DeploymentStatus, error?: ErrorSummary): Promise<void> {
    await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: key.deployment(pipeline, deploymentId),
        UpdateExpression: error ? 'SET #s = :s, updatedAt = :u, #e = :e' : 'SET #s = :s, updatedAt = :u REMOVE #e',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeNames: { '#s': 'status', '#e': 'error' },
        ExpressionAttributeValues: { ':s': status, ':u': this.now().toISOString(), ...(error ? { ':e': error } : {}) },
      }),
    );
  }

  /** Records which snapshot execution is capturing the deployment now (see Deployment.snapshotExecution). */
  async setSnapshotExecution(pipeline: string, deploymentId: string, executionName: string): Promise<void> {
    await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: key.deployment(pipeline, deploymentId),
        UpdateExpression: 'SET snapshotExecution = :x',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':x': executionName },
      }),
    );
  }

  /** Every deployment of a pipeline, most recent first (by createdAt, then deployment id). */
  async listDeployments(pipeline: string): Promise<Deployment[]> {
    const items = (await this.queryAll(`PIPELINE#${pipeline}`, 'DEPLOYMENT#')).map((i) => strip<Deployment>(i)!);
    return items.sort((a, b) => (a.createdAt === b.createdAt ? b.deploymentId.localeCompare(a.deploymentId) : b.createdAt.localeCompare(a.createdAt)));
  }

  /**
   * The pipeline's most recent deployment, or, given statuses, its most recent deployment in one of them; undefined if
   * there is none. Derived deployments (`origin`: a rollback to a time, an undo) are not deploys: never the latest, so
   * an automatic trigger or a `latest` drill never picks one.
   */
  async latestDeployment(pipeline: string, statuses?: readonly DeploymentStatus[]): Promise<Deployment | undefined> {
    const all = (await this.listDeployments(pipeline)).filter((d) => d.origin === undefined);
    return statuses ? all.find((d) => statuses.includes(d.status)) : all[0];
  }

  // ── restore points ─────────────────────────────────────────────────────────

  /** Stores a unit's restore point. Sealed points are immutable: a second put of a different point is refused. */
  async putRestorePoint(pipeline: string, deploymentId: string, point: RestorePoint): Promise<RestorePoint> {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...key.point(pipeline, deploymentId, point.unitId), point },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return point;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      // A retried capture: keep the first point (it is what the data was captured as).
      const existing = await this.getRestorePoint(pipeline, deploymentId, point.unitId);
      if (!existing) throw error;
      return existing;
    }
  }

  async getRestorePoint(pipeline: string, deploymentId: string, unitId: string): Promise<RestorePoint | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.point(pipeline, deploymentId, unitId), ConsistentRead: true }));
    return (out.Item?.point as RestorePoint | undefined) ?? undefined;
  }

  async listRestorePoints(pipeline: string, deploymentId: string): Promise<RestorePoint[]> {
    const items = await this.queryAll(`DEPLOYMENT#${pipeline}#${deploymentId}`, 'POINT#');
    return items.map((i) => i.point as RestorePoint);
  }

  // ── runs and steps ─────────────────────────────────────────────────────────

  /** Records a run; the same runId again (a retried task) keeps the first record. */
  async createRun(run: Run): Promise<Run> {
    try {
      await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.run(run.runId), ...run }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return run;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const existing = await this.getRun(run.runId);
      if (!existing) throw error;
      return existing;
    }
  }

  async getRun(runId: string): Promise<Run | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.run(runId), ConsistentRead: true }));
    const run = strip<Run>(out.Item);
    if (run?.estimate !== undefined) {
      // Written by an older or newer version, an estimate that does not read back is left out, never guessed at.
      const estimate = runEstimateSchema.safeParse(run.estimate);
      if (estimate.success) run.estimate = estimate.data;
      else delete run.estimate;
    }
    return run;
  }

  async requireRun(runId: string): Promise<Run> {
    const run = await this.getRun(runId);
    if (!run) throw new RestorePointMissingError(`no rollback run "${runId}" in ledger ${this.tableName}`);
    return run;
  }

  async updateRun(runId: string, patch: Partial<Pick<Run, 'status' | 'endedAt' | 'error' | 'reportKey' | 'estimate' | 'replay'>>): Promise<void> {
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const sets: string[] = [];
    for (const [k, v] of Object.entries(patch)) {
      if (v === undefined) continue;
      names[`#${k}`] = k;
      values[`:${k}`] = v;
      sets.push(`#${k} = :${k}`);
    }
    if (sets.length === 0) return;
    await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: key.run(runId),
        UpdateExpression: `SET ${sets.join(', ')}`,
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
      }),
    );
  }

  async putStep(step: Step): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.step(step.runId, step.stage, step.unitId), ...step } }));
  }

  async getStep(runId: string, stage: number, unitId: string): Promise<Step | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.step(runId, stage, unitId), ConsistentRead: true }));
    return strip<Step>(out.Item);
  }

  async listSteps(runId: string): Promise<Step[]> {
    return (await this.queryAll(`RUN#${runId}`, 'STEP#')).map((i) => strip<Step>(i)!);
  }

  // ── lock ───────────────────────────────────────────────────────────────────

  /**
   * Takes the pipeline's lock for a run. Succeeds if the lock is free, expired, or already held by the same
   * run (a retried task); otherwise throws LockHeldError naming the holder.
   */
  async acquireLock(pipeline: string, holder: string, deploymentId: string, ttlSeconds: number): Promise<Lock> {
    const now = this.now();
    const nowEpoch = Math.floor(now.getTime() / 1000);
    const lock: Lock = { pipeline, holder, deploymentId, acquiredAt: now.toISOString(), expiresAt: nowEpoch + ttlSeconds };
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...key.lock(pipeline), ...lock },
          ConditionExpression: 'attribute_not_exists(pk) OR expiresAt < :now OR holder = :holder',
          ExpressionAttributeValues: { ':now': nowEpoch, ':holder': holder },
        }),
      );
      return lock;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const current = await this.getLock(pipeline);
      const by = current ? `run "${current.holder}" (deployment ${current.deploymentId}, since ${current.acquiredAt}, expires ${new Date(current.expiresAt * 1000).toISOString()})` : 'another run';
      throw new LockHeldError(`pipeline "${pipeline}" is locked by ${by}: wait for it to finish, or stop it and release the lock (etl-rollback unlock ${pipeline})`);
    }
  }

  async getLock(pipeline: string): Promise<Lock | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.lock(pipeline), ConsistentRead: true }));
    return strip<Lock>(out.Item);
  }

  /** Releases the lock if this run holds it; releasing a lock one does not hold (or that is gone) is a no-op. */
  async releaseLock(pipeline: string, holder: string): Promise<boolean> {
    try {
      await this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: key.lock(pipeline),
          ConditionExpression: 'holder = :holder',
          ExpressionAttributeValues: { ':holder': holder },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  /**
   * Breaks a pipeline's lock on a person's word (a run that died holding it, before its TTL): releases it only if it
   * is still held by the holder that was read (a run that just released it, or a new holder, is left alone) and keeps
   * a record of who broke whose lock and why, in the same transaction.
   */
  async breakLock(pipeline: string, by: string, reason: string): Promise<{ broken?: Lock }> {
    const current = await this.getLock(pipeline);
    if (!current) return {};
    const at = this.now().toISOString();
    try {
      await this.doc.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              Delete: {
                TableName: this.tableName,
                Key: key.lock(pipeline),
                ConditionExpression: 'holder = :holder',
                ExpressionAttributeValues: { ':holder': current.holder },
              },
            },
            {
              Put: {
                TableName: this.tableName,
                Item: { pk: `LOCK#${pipeline}`, sk: `BROKEN#${at}#${current.holder}`, pipeline, lock: current, by, reason, at },
              },
            },
          ],
        }),
      );
      return { broken: current };
    } catch (error) {
      if ((error as { name?: string }).name === 'TransactionCanceledException') return {};
      throw error;
    }
  }

  /** Every lock broken by hand for a pipeline, oldest first. */
  async listBrokenLocks(pipeline: string): Promise<{ lock: Lock; by: string; reason: string; at: string }[]> {
    return (await this.queryAll(`LOCK#${pipeline}`, 'BROKEN#')) as unknown as { lock: Lock; by: string; reason: string; at: string }[];
  }

  // ── triggers ───────────────────────────────────────────────────────────────

  /**
   * Records what an EventBridge event did. One record per event id: a redelivered event (EventBridge retries) keeps the
   * first record and returns it with `created: false`.
   */
  async recordTrigger(record: Omit<TriggerRecord, 'recordedAt' | 'expiresAt'>): Promise<{ record: TriggerRecord; created: boolean }> {
    const now = this.now();
    const full: TriggerRecord = { ...record, recordedAt: now.toISOString(), expiresAt: Math.floor(now.getTime() / 1000) + TRIGGER_RECORD_TTL_DAYS * 86_400 };
    const k = key.trigger(record.pipeline, record.eventTime, record.eventId);
    try {
      await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...k, ...full }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return { record: full, created: true };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: k, ConsistentRead: true }));
      const existing = strip<TriggerRecord>(out.Item);
      if (!existing) throw error;
      return { record: existing, created: false };
    }
  }

  /** The pipeline's trigger records, oldest first. */
  async listTriggers(pipeline: string): Promise<TriggerRecord[]> {
    return (await this.queryAll(`TRIGGER#${pipeline}`, 'EVENT#')).map((i) => strip<TriggerRecord>(i)!);
  }

  // ── run index ──────────────────────────────────────────────────────────────

  /** Adds a run to its pipeline's run index (idempotent: the same run writes the same item). */
  async indexRun(run: Pick<Run, 'pipeline' | 'runId' | 'deploymentId' | 'startedAt' | 'dryRun' | 'requestedBy' | 'reason'>): Promise<void> {
    const entry: RunIndexEntry = {
      pipeline: run.pipeline,
      runId: run.runId,
      deploymentId: run.deploymentId,
      startedAt: run.startedAt,
      dryRun: run.dryRun,
      requestedBy: run.requestedBy,
      reason: run.reason,
    };
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.runIndex(run.pipeline, run.startedAt, run.runId), ...entry } }));
  }

  /** The pipeline's indexed runs, newest first; at most `limit` (all when undefined). One query, no scan. */
  async listRunIndex(pipeline: string, limit?: number): Promise<RunIndexEntry[]> {
    const items: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.doc.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :sk)',
          ExpressionAttributeValues: { ':pk': `PIPELINE#${pipeline}`, ':sk': 'RUN#' },
          ScanIndexForward: false,
          ConsistentRead: true,
          ExclusiveStartKey: start,
          ...(limit !== undefined ? { Limit: limit - items.length } : {}),
        }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start && (limit === undefined || items.length < limit));
    return items.map((i) => strip<RunIndexEntry>(i)!);
  }

  // ── throughput (estimates) ────────────────────────────────────────────────

  /** Records how fast a successful run restored its units. The same run again writes the same item (idempotent). */
  async putThroughputSample(sample: ThroughputSample): Promise<void> {
    const item = throughputSampleSchema.parse(sample);
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.throughput(item.pipeline, item.runStartedAt, item.runId), ...item } }));
  }

  /** The pipeline's most recent throughput records, newest first (at most `limit`); items that do not read back are skipped. */
  async listThroughputSamples(pipeline: string, limit = HISTORY_RUNS): Promise<ThroughputSample[]> {
    const out = await this.doc.send(
      new QueryCommand({
        TableName: this.tableName,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :sk)',
        ExpressionAttributeValues: { ':pk': `THROUGHPUT#${pipeline}`, ':sk': 'RUN#' },
        ScanIndexForward: false,
        ConsistentRead: true,
        Limit: limit,
      }),
    );
    return (out.Items ?? []).flatMap((i) => {
      const parsed = throughputSampleSchema.safeParse(strip(i));
      return parsed.success ? [parsed.data] : [];
    });
  }

  // ── release ────────────────────────────────────────────────────────────────

  async putReleaseRecord(record: ReleaseRecord): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.release(record.pipeline, record.deploymentId), ...record } }));
  }

  async getReleaseRecord(pipeline: string, deploymentId: string): Promise<ReleaseRecord | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.release(pipeline, deploymentId), ConsistentRead: true }));
    return strip<ReleaseRecord>(out.Item);
  }

  /**
   * Marks a deployment RELEASED, only if it is still in the status it was found in (a rollback that started meanwhile
   * moves it to ROLLING_BACK, and then the write is refused). Returns false when refused.
   */
  async markReleased(pipeline: string, deploymentId: string, expected: DeploymentStatus): Promise<boolean> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key.deployment(pipeline, deploymentId),
          UpdateExpression: 'SET #s = :released, updatedAt = :u',
          ConditionExpression: 'attribute_exists(pk) AND #s = :expected',
          ExpressionAttributeNames: { '#s': 'status' },
          ExpressionAttributeValues: { ':released': 'RELEASED', ':expected': expected, ':u': this.now().toISOString() },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  /**
   * Every deployment of every pipeline. A paged Scan filtered to deployment items: used once a day by the release job,
   * which must also see deployments written before any index existed; interactive reads (status, history) query one
   * pipeline's partition instead.
   */
  async scanDeployments(): Promise<Deployment[]> {
    const found: Deployment[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.doc.send(
        new ScanCommand({
          TableName: this.tableName,
          FilterExpression: 'begins_with(pk, :p) AND begins_with(sk, :d)',
          ExpressionAttributeValues: { ':p': 'PIPELINE#', ':d': 'DEPLOYMENT#' },
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      found.push(...(out.Items ?? []).map((i) => strip<Deployment>(i)!));
      start = out.LastEvaluatedKey;
    } while (start);
    return found;
  }

  // ── cancel requests ──────────────────────────────────────────────────────

  /**
   * Records that someone asked run `runId` to stop. The first request is kept (who asked first, and why); a second one
   * returns it with `already: true`. Not conditional on the run item: Ctrl-C may come before the run's first state has
   * recorded it, and the run finds the request at its first safe point.
   */
  async requestCancel(request: CancelRequest): Promise<{ record: CancelRequest; already: boolean }> {
    try {
      await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...key.cancel(request.runId), ...request }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return { record: request, already: false };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      return { record: (await this.getCancelRequest(request.runId))!, already: true };
    }
  }

  async getCancelRequest(runId: string): Promise<CancelRequest | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.cancel(runId), ConsistentRead: true }));
    return strip<CancelRequest>(out.Item);
  }

  // ── approvals and paused triggers (policy) ───────────────────────────────

  /**
   * Records that a run waits for approval, with the task token that answers it. A retried request (a new token)
   * replaces the pending one; a decided approval is kept as decided.
   */
  async putApprovalRequest(request: Omit<ApprovalRecord, 'status'>): Promise<ApprovalRecord> {
    const record: ApprovalRecord = { ...request, status: 'PENDING' };
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...key.approval(request.runId), ...record },
          ConditionExpression: 'attribute_not_exists(pk) OR #s = :pending',
          ExpressionAttributeNames: { '#s': 'status' },
          ExpressionAttributeValues: { ':pending': 'PENDING' },
        }),
      );
      return record;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      return (await this.getApproval(request.runId))!;
    }
  }

  async getApproval(runId: string): Promise<ApprovalRecord | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.approval(runId), ConsistentRead: true }));
    return strip<ApprovalRecord>(out.Item);
  }

  /** Decides a pending approval (conditional: only once). Returns the record as stored and whether this call decided it. */
  async decideApproval(
    runId: string,
    decision: { status: Exclude<ApprovalStatus, 'PENDING'>; decidedBy: string; reason: string; decidedAt: string },
  ): Promise<{ record: ApprovalRecord | undefined; decided: boolean }> {
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key.approval(runId),
          UpdateExpression: 'SET #s = :s, decidedBy = :by, decidedAt = :at, reason = :r',
          ConditionExpression: 'attribute_exists(pk) AND #s = :pending',
          ExpressionAttributeNames: { '#s': 'status' },
          ExpressionAttributeValues: { ':s': decision.status, ':by': decision.decidedBy, ':at': decision.decidedAt, ':r': decision.reason, ':pending': 'PENDING' },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return { record: strip<ApprovalRecord>(out.Attributes), decided: true };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      return { record: await this.getApproval(runId), decided: false };
    }
  }

  /** Records a trigger a run pauses, before it is disabled. The first record wins, so a retry keeps the state found first. */
  async recordPausedTrigger(record: Omit<PausedTrigger, 'resumedAt'>): Promise<PausedTrigger> {
    const k = key.paused(record.runId, record);
    try {
      await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...k, ...record }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return record;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: k, ConsistentRead: true }));
      return strip<PausedTrigger>(out.Item)!;
    }
  }

  /** The triggers a run paused, by kind (rules, then schedules), bus or group, and name. */
  async listPausedTriggers(runId: string): Promise<PausedTrigger[]> {
    return (await this.queryAll(`RUN#${runId}`, 'PAUSE#')).map((i) => strip<PausedTrigger>(i)!);
  }

  async markTriggerResumed(runId: string, t: Pick<PausedTrigger, 'kind' | 'container' | 'name'>, resumedAt: string): Promise<void> {
    await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: key.paused(runId, t),
        UpdateExpression: 'SET resumedAt = :at',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':at': resumedAt },
      }),
    );
  }

  // ── change capture ─────────────────────────────────────────────────────────

  /** Opens a deployment's change window; a retried snapshot finds it open (or closed) and leaves it as it is. */
  async openChangeWindow(window: Omit<ChangeWindow, 'closedAt' | 'closedBy'>): Promise<ChangeWindow> {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...key.changeWindow(window.pipeline, window.deploymentId), ...window },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return window;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const existing = await this.getChangeWindow(window.pipeline, window.deploymentId);
      if (!existing) throw error;
      return existing;
    }
  }

  async getChangeWindow(pipeline: string, deploymentId: string): Promise<ChangeWindow | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key.changeWindow(pipeline, deploymentId), ConsistentRead: true }));
    return strip<ChangeWindow>(out.Item);
  }

  /** The pipeline's change windows, open and closed, oldest first. */
  async listChangeWindows(pipeline: string): Promise<ChangeWindow[]> {
    const items = (await this.queryAll(`${CHANGE_WINDOW_PARTITION_PREFIX}${pipeline}`, 'WINDOW#')).map((i) => strip<ChangeWindow>(i)!);
    return items.sort((a, b) => a.openedAt.localeCompare(b.openedAt));
  }

  /**
   * Closes a window at `at`. Idempotent: a window already closed keeps its first closing time (returned with
   * `closed: false`); undefined when the deployment has no window.
   */
  async closeChangeWindow(pipeline: string, deploymentId: string, at: string, by: string): Promise<{ window: ChangeWindow; closed: boolean } | undefined> {
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key.changeWindow(pipeline, deploymentId),
          UpdateExpression: 'SET closedAt = :at, closedBy = :by',
          ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(closedAt)',
          ExpressionAttributeValues: { ':at': at, ':by': by },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return { window: strip<ChangeWindow>(out.Attributes)!, closed: true };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const existing = await this.getChangeWindow(pipeline, deploymentId);
      return existing ? { window: existing, closed: false } : undefined;
    }
  }

  // ── helpers ────────────────────────────────────────────────────────────────

  private async queryAll(pk: string, skPrefix: string): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.doc.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :sk)',
          ExpressionAttributeValues: { ':pk': pk, ':sk': skPrefix },
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }
}

/**
 * Creates the ledger table if it does not exist (local runs; in AWS the stack owns it) and waits until it is
 * active. Same key schema and TTL attribute as the stack's table.
 */
export async function ensureLedgerTable(dynamo: DynamoDBClient, tableName: string): Promise<void> {
  try {
    await dynamo.send(
      new CreateTableCommand({
        TableName: tableName,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ],
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
      }),
    );
  } catch (error) {
    if (!(error instanceof ResourceInUseException)) throw error;
  }
  for (let i = 0; i < 60; i++) {
    const out = await dynamo.send(new DescribeTableCommand({ TableName: tableName }));
    if (out.Table?.TableStatus === 'ACTIVE') break;
    await new Promise((r) => setTimeout(r, 500));
  }
  try {
    await dynamo.send(new UpdateTimeToLiveCommand({ TableName: tableName, TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true } }));
  } catch (error) {
    // DynamoDB refuses to enable TTL that is already enabled; anything else is a real problem.
    if (!/already enabled/i.test((error as Error).message ?? '')) throw error;
  }
}
