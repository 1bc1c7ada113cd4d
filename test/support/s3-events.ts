import { randomBytes } from 'node:crypto';

/**
 * S3 events as AWS delivers them through EventBridge, for what moto does not send: moto announces no delete on a versioned bucket, where AWS sends `Object Deleted` with
 * `deletion-type: Delete Marker Created`; and moto hands the events S3 itself sends to a rule's SQS target as they are,
 * skipping the target's input transformer, which AWS applies.
 */

/** The `Object Deleted` event AWS sends for a DeleteObject on a versioned bucket (a delete marker created). */
export function deleteMarkerEvent(bucket: string, key: string, markerVersionId: string, sequencer: string): Record<string, unknown> {
  return {
    version: '0',
    id: `evt-${randomBytes(8).toString('hex')}`,
    'detail-type': 'Object Deleted',
    source: 'aws.s3',
    account: '123456789012',
    time: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    region: 'us-east-1',
    resources: [`arn:aws:s3:::${bucket}`],
    detail: {
      version: '0',
      bucket: { name: bucket },
      object: { key, 'version-id': markerVersionId, sequencer },
      'request-id': 'TEST',
      requester: '123456789012',
      reason: 'DeleteObject',
      'deletion-type': 'Delete Marker Created',
    },
  };
}

/**
 * A capture-queue message body as AWS delivers it: `{pipeline, event}` (the rule target's input transformer). A body
 * moto delivered raw (an S3 event) gets that wrapping, with the pipeline of the rule that matched its bucket.
 */
export function asDelivered(body: string, pipelineOfBucket: ReadonlyMap<string, string>): string {
  const parsed = JSON.parse(body) as { source?: string; detail?: { bucket?: { name?: string } } };
  if (parsed.source !== 'aws.s3') return body;
  const pipeline = pipelineOfBucket.get(parsed.detail?.bucket?.name ?? '');
  if (!pipeline) throw new Error(`an S3 event of a bucket no capture rule here matches: ${body.slice(0, 200)}`);
  return JSON.stringify({ pipeline, event: parsed });
}
