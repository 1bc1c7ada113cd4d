import { Duration } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  MathExpression,
  Metric,
  SingleValueWidget,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { ITopic } from 'aws-cdk-lib/aws-sns';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

/** The namespace and service dimension the handlers publish under (Powertools Metrics, EMF). */
export const METRICS_NAMESPACE = 'EtlRollback';
export const METRICS_SERVICE = 'etl-rollback';

export interface ObservabilityProps {
  readonly snapshot: StateMachine;
  readonly rollback: StateMachine;
  readonly release: StateMachine;
  /** The trigger rules' dead-letter queue, when triggers are configured. */
  readonly triggersDeadLetterQueue?: IQueue;
  /** Where alarms go (the notifications topic); none: alarms without actions. */
  readonly alarmTopic?: ITopic;
  /** The drill state machine: its DrillFailed metric gets an alarm. */
  readonly drill?: StateMachine;
}

/** A handler metric (dimension service=etl-rollback), summed over 5 minutes unless said otherwise. */
export function handlerMetric(metricName: string, statistic = 'Sum', period = Duration.minutes(5)): Metric {
  return new Metric({ namespace: METRICS_NAMESPACE, metricName, dimensionsMap: { service: METRICS_SERVICE }, statistic, period });
}

/**
 * The CloudWatch dashboard an on-call engineer opens first (runs started, succeeded and failed; duration per stage;
 * objects and rows restored; gate failures; time since each pipeline's last restore point) and the alarms that page:
 * a rollback failed (the handlers' RollbacksFailed and the rollback machine's ExecutionsFailed), a deploy failed with no
 * restore point to go back to (TriggerWithoutRestorePoint), trigger events that could not be delivered (DLQ depth),
 * and a release job that failed.
 */
export class Observability extends Construct {
  readonly dashboard: Dashboard;
  readonly alarms: Record<string, Alarm>;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);

    const stageDuration = new MathExpression({
      label: 'stage',
      expression: `SEARCH('{${METRICS_NAMESPACE},Stage,service} MetricName="StageDuration"', 'Maximum', 300)`,
      period: Duration.minutes(5),
    });
    const sinceRestorePoint = new MathExpression({
      label: 'pipeline',
      expression: `SEARCH('{${METRICS_NAMESPACE},pipeline,service} MetricName="TimeSinceLastRestorePoint"', 'Maximum', 86400)`,
      period: Duration.days(1),
    });

    /** One line per pipeline: the handlers publish these under dimension `pipeline` as well (lambdas/run-metrics.ts). */
    const byPipeline = (metricName: string, statistic: string, label: string, period = 300) =>
      new MathExpression({
        label,
        expression: `SEARCH('{${METRICS_NAMESPACE},pipeline,service} MetricName="${metricName}"', '${statistic}', ${period})`,
        period: Duration.seconds(period),
      });

    this.dashboard = new Dashboard(this, 'Dashboard', { defaultInterval: Duration.days(7) });
    this.dashboard.addWidgets(
      new TextWidget({
        markdown:
          '# etl-rollback\nRuns, stages and restore points. A rollback\'s full report is in the audit bucket (`reports/<pipeline>/<run>.md`); ' +
          '`etl-rollback status <pipeline>` and `history <pipeline>` read the ledger.',
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Rollback runs',
        left: [handlerMetric('RollbacksStarted'), handlerMetric('RollbacksSucceeded'), handlerMetric('RollbacksFailed'), handlerMetric('RollbacksRefused')],
        width: 8,
      }),
      new GraphWidget({
        title: 'Rollback executions (Step Functions)',
        left: [props.rollback.metricStarted(), props.rollback.metricSucceeded(), props.rollback.metricFailed(), props.rollback.metricTimedOut()],
        width: 8,
      }),
      new GraphWidget({ title: 'Duration per stage (ms, by stage number)', left: [stageDuration], width: 8 }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({ title: 'Objects and rows restored', left: [handlerMetric('ObjectsRestored')], right: [handlerMetric('RowsRestored')], width: 8 }),
      new GraphWidget({ title: 'Gate failures', left: [handlerMetric('GateFailures')], width: 8 }),
      new GraphWidget({ title: 'Time since last restore point (s, by pipeline)', left: [sinceRestorePoint], width: 8 }),
    );
    this.dashboard.addWidgets(
      new TextWidget({ markdown: '## By pipeline\nOne line per pipeline; a pipeline appears once it has had a run.', width: 24, height: 1 }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({ title: 'Rollbacks started, by pipeline', left: [byPipeline('RollbacksStarted', 'Sum', 'started')], width: 6 }),
      new GraphWidget({ title: 'Rollbacks failed, by pipeline', left: [byPipeline('RollbacksFailed', 'Sum', 'failed')], width: 6 }),
      new GraphWidget({ title: 'Run duration (ms), by pipeline', left: [byPipeline('RunDuration', 'Maximum', 'duration')], width: 6 }),
      new GraphWidget({
        title: 'Rows and objects restored, by pipeline',
        left: [byPipeline('RowsRestored', 'Sum', 'rows')],
        right: [byPipeline('ObjectsRestored', 'Sum', 'objects')],
        width: 6,
      }),
    );
    this.dashboard.addWidgets(
      new SingleValueWidget({
        title: 'Last 7 days',
        metrics: [
          handlerMetric('RollbacksStarted', 'Sum', Duration.days(7)),
          handlerMetric('RollbacksFailed', 'Sum', Duration.days(7)),
          handlerMetric('GateFailures', 'Sum', Duration.days(7)),
          handlerMetric('TriggerWithoutRestorePoint', 'Sum', Duration.days(7)),
          handlerMetric('DeploymentsReleased', 'Sum', Duration.days(7)),
        ],
        width: 24,
      }),
    );

    const atLeastOne = (id: string, metric: Metric, description: string): Alarm =>
      new Alarm(this, id, {
        alarmDescription: description,
        metric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
    this.alarms = {
      rollbackFailed: atLeastOne(
        'RollbackFailed',
        handlerMetric('RollbacksFailed'),
        'A rollback failed or stopped part-way: the pipeline may hold mixed data. Read its report (audit bucket, reports/<pipeline>/<run>.md) or run `etl-rollback status <pipeline>`; rerun the rollback to resume.',
      ),
      rollbackExecutionFailed: atLeastOne(
        'RollbackExecutionFailed',
        props.rollback.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }),
        'An execution of the rollback state machine failed (including a failure before the run could be recorded). Open the execution in the console.',
      ),
      triggerWithoutRestorePoint: atLeastOne(
        'DeployWithoutRestorePoint',
        handlerMetric('TriggerWithoutRestorePoint'),
        'A deploy failed (a trigger fired) but the pipeline has no sealed restore point to go back to: nothing was started. Take snapshots before deploys.',
      ),
      releaseFailed: atLeastOne(
        'ReleaseFailed',
        props.release.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }),
        'The daily release of expired restore points failed; restore points are kept (and cost) until it succeeds.',
      ),
    };
    if (props.drill) {
      this.dashboard.addWidgets(
        new GraphWidget({ title: 'Rollback drills', left: [handlerMetric('DrillsStarted'), handlerMetric('DrillsSucceeded'), handlerMetric('DrillFailed')], width: 12 }),
        new GraphWidget({ title: 'Drill recovery time (ms), by pipeline: compare with each pipeline\'s RTO', left: [byPipeline('DrillRecoveryTime', 'Maximum', 'recovery', 86400)], width: 12 }),
      );
      this.alarms.drillFailed = atLeastOne(
        'DrillFailed',
        handlerMetric('DrillFailed'),
        'A rollback drill failed (a gate on its scratch copies, an error, or recovery slower than the pipeline\'s RTO): a real rollback of that pipeline may fail the same way. Read the drill report (audit bucket, reports/<pipeline>/<drill run>.md).',
      );
    }
    if (props.triggersDeadLetterQueue) {
      this.alarms.triggersDeadLetters = atLeastOne(
        'TriggerEventsUndelivered',
        props.triggersDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
        'Trigger events could not start a rollback (dead-letter queue not empty): read the messages, fix the cause, start the rollback by hand.',
      );
    }
    if (props.alarmTopic) {
      const action = new SnsAction(props.alarmTopic);
      for (const alarm of Object.values(this.alarms)) alarm.addAlarmAction(action);
    }
  }
}
