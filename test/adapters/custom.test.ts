import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import { describe, expect, it } from 'vitest';
import { customAdapter, customChecksum, type CustomInvoker, MAX_CUSTOM_RESTORE_POINT_BYTES } from '../../core/adapters/custom.ts';
import type { AdapterContext } from '../../core/adapters/types.ts';
import { CompensationFailedError, InputError, RestorePointMissingError } from '../../core/errors.ts';
import { customUnitSchema, type CustomUnit } from '../../core/manifest/schema.ts';
import { lambdaInvoker } from '../../core/runtime/custom-invoker.ts';
import { unitRequests } from '../../core/plan/requests.ts';

const ARN = 'arn:aws:lambda:eu-west-1:111122223333:function:orders-republish';
const unit = (extra: Record<string, unknown> = {}): CustomUnit => customUnitSchema.parse({ id: 'republish', type: 'custom', handler: { lambdaArn: ARN }, ...extra });

function ctx(invokeCustom?: CustomInvoker): AdapterContext {
  return {
    pipeline: 'orders',
    deploymentId: 'd-1',
    runId: 'run-1',
    stateBucket: 'state',
    retentionDays: 14,
    now: () => new Date('2026-11-29T08:00:00Z'),
    log: { info: () => undefined, warn: () => undefined },
    ...(invokeCustom ? { invokeCustom } : {}),
  } as unknown as AdapterContext;
}

/** A LambdaClient stand-in: records what it was sent, answers `reply`. */
function fakeLambda(reply: { Payload?: string; FunctionError?: string }) {
  const sent: { input: InvokeCommand['input']; signal: unknown }[] = [];
  const client = {
    send: async (command: InvokeCommand, options: { abortSignal?: AbortSignal }) => {
      sent.push({ input: command.input, signal: options?.abortSignal });
      return { StatusCode: 200, ...(reply.FunctionError ? { FunctionError: reply.FunctionError } : {}), ...(reply.Payload !== undefined ? { Payload: new TextEncoder().encode(reply.Payload) } : {}) };
    },
  };
  return { client: client as unknown as LambdaClient, sent };
}

describe('custom adapter: the contract, enforced', () => {
  it('capture keeps the handler\'s restore point with its checksum; restore and verify get it back unchanged', async () => {
    const calls: unknown[] = [];
    const invoke: CustomInvoker = async (_h, request) => {
      calls.push(request);
      if (request.action === 'capture') return { restorePoint: { b: [2, 1], a: 'x' }, changed: { idsRecorded: 2 }, message: 'kept' };
      if (request.action === 'verify') return { changed: {}, verified: true, message: 'all sent' };
      return { changed: { messagesSent: 3, retractionsSent: 1 }, message: request.dryRun ? 'would send 4' : 'sent 4' };
    };
    const point = await customAdapter.capture(unit(), ctx(invoke));
    expect(point).toMatchObject({ unitId: 'republish', type: 'custom', count: 2, checksum: customChecksum({ a: 'x', b: [2, 1] }), details: { handler: { lambdaArn: ARN }, restorePoint: { b: [2, 1], a: 'x' } } });
    expect(await customAdapter.diff(unit(), point, ctx(invoke))).toEqual({ changes: { messagesSent: 3, retractionsSent: 1 }, writes: 4, notes: ['would send 4'] });
    expect(await customAdapter.restore(unit(), point, ctx(invoke))).toEqual({ changes: { messagesSent: 3, retractionsSent: 1 }, writes: 4, notes: ['sent 4'] });
    expect(await customAdapter.verify(unit(), point, ctx(invoke))).toEqual([{ name: 'compensation', ok: true, expected: 'verified', actual: 'verified', detail: 'all sent' }]);
    expect(calls).toEqual([
      { action: 'capture', pipeline: 'orders', deploymentId: 'd-1', unitId: 'republish', dryRun: false },
      { action: 'restore', pipeline: 'orders', deploymentId: 'd-1', unitId: 'republish', runId: 'run-1', restorePoint: { b: [2, 1], a: 'x' }, dryRun: true },
      { action: 'restore', pipeline: 'orders', deploymentId: 'd-1', unitId: 'republish', runId: 'run-1', restorePoint: { b: [2, 1], a: 'x' }, dryRun: false },
      { action: 'verify', pipeline: 'orders', deploymentId: 'd-1', unitId: 'republish', runId: 'run-1', restorePoint: { b: [2, 1], a: 'x' }, dryRun: false },
    ]);
  });

  it('refuses a restore point changed since the snapshot, and one too large to keep', async () => {
    const invoke: CustomInvoker = async () => ({ restorePoint: { ids: ['a'] }, changed: {}, verified: true, message: '' });
    const point = await customAdapter.capture(unit(), ctx(invoke));
    const tampered = { ...point, details: { ...point.details, restorePoint: { ids: ['a', 'b'] } } };
    await expect(customAdapter.restore(unit(), tampered, ctx(invoke))).rejects.toThrow(RestorePointMissingError);
    const big: CustomInvoker = async () => ({ restorePoint: 'x'.repeat(MAX_CUSTOM_RESTORE_POINT_BYTES), changed: {}, message: '' });
    await expect(customAdapter.capture(unit(), ctx(big))).rejects.toThrow(/answered a restore point of 262,146 bytes; at most 262,144/);
  });

  it('a handler that does not answer in time, or answers verify without "verified", fails with CompensationFailedError', async () => {
    const never: CustomInvoker = () => new Promise(() => undefined);
    const error = await customAdapter.capture(unit({ timeoutSeconds: 1 }), ctx(never)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CompensationFailedError);
    expect((error as Error).message).toBe(`unit "republish": handler ${ARN} did not answer "capture" within 1 s (timeoutSeconds)`);
    const point = { unitId: 'republish', type: 'custom' as const, capturedAt: '', count: 0, checksum: customChecksum(null), details: { handler: { lambdaArn: ARN }, restorePoint: null, message: '' } };
    const vague: CustomInvoker = async () => ({ changed: {}, message: 'looks fine' });
    await expect(customAdapter.verify(unit(), point, ctx(vague))).rejects.toThrow(`handler ${ARN} gave a malformed answer to "verify": verified: expected true or false`);
    await expect(customAdapter.restore(unit(), point, ctx())).rejects.toThrow(InputError);
  });
});

describe('lambdaInvoker: custom handlers as Lambda functions (AWS SDK)', () => {
  const request = { action: 'restore', pipeline: 'orders', deploymentId: 'd-1', unitId: 'republish', dryRun: false };

  it('invokes the function (RequestResponse) with the request, bounded by the unit\'s timeout, and returns its JSON answer', async () => {
    const { client, sent } = fakeLambda({ Payload: '{"changed":{"messagesSent":1},"message":"ok"}' });
    expect(await lambdaInvoker(client)({ lambdaArn: ARN }, request, 30)).toEqual({ changed: { messagesSent: 1 }, message: 'ok' });
    expect(sent[0]!.input).toMatchObject({ FunctionName: ARN, InvocationType: 'RequestResponse' });
    expect(JSON.parse(new TextDecoder().decode(sent[0]!.input.Payload as Uint8Array))).toEqual(request);
    expect(sent[0]!.signal).toBeInstanceOf(AbortSignal);
  });

  it('a function error comes back as the handler\'s own message; a module handler is refused in AWS', async () => {
    const { client } = fakeLambda({ FunctionError: 'Unhandled', Payload: '{"errorType":"QueueDoesNotExist","errorMessage":"queue orders-corrections is gone"}' });
    await expect(lambdaInvoker(client)({ lambdaArn: ARN }, request, 30)).rejects.toThrow('QueueDoesNotExist: queue orders-corrections is gone');
    await expect(lambdaInvoker(client)({ module: './republish.ts', export: 'handler' }, request, 30)).rejects.toThrow(
      /handler \.\/republish\.ts#handler is a module: modules run only in local runs \(--local\)/,
    );
  });

  it('through the adapter, the function\'s failure fails the unit naming the function', async () => {
    const { client } = fakeLambda({ FunctionError: 'Unhandled', Payload: '{"errorType":"Error","errorMessage":"502 from partner API"}' });
    const invoke = lambdaInvoker(client);
    const point = { unitId: 'republish', type: 'custom' as const, capturedAt: '', count: 0, checksum: customChecksum(null), details: { handler: { lambdaArn: ARN }, restorePoint: null, message: '' } };
    await expect(customAdapter.restore(unit(), point, ctx(invoke))).rejects.toThrow(`unit "republish": handler ${ARN} failed at restore: Error: 502 from partner API`);
  });
});

describe('estimates count the handler\'s invocations', () => {
  it('a custom unit: its task plus its handler at restore and at verify', () => {
    expect(unitRequests('custom', { messagesSent: 5 })['Lambda invocations']).toBe(3);
    expect(unitRequests('postgres-table', { rowsInserted: 5 })['Lambda invocations']).toBe(1);
  });
});
