import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { runLocal } from '../../cli/local-runner.ts';
import { undoRefusal } from '../../core/workflow/undo.ts';
import { s3PrefixUnitSchema } from '../../core/manifest/schema.ts';

/**
 * The undo request (`undo: "<run>"` instead of `deploymentId`) is checked in the rollback machine's first state, every
 * problem named, before any AWS or database call: the endpoint points at a closed port, so a call would fail with a
 * connection error (exit 1), not InputError (exit 2).
 */
const DEAD = 'http://127.0.0.1:9';

describe('undo: bad input is refused before anything is touched', () => {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.AWS_ENDPOINT_URL;
    process.env.AWS_ENDPOINT_URL = DEAD;
  });
  afterEach(() => {
    process.env.AWS_ENDPOINT_URL = saved;
  });

  it.each([
    { name: 'both undo and deploymentId', request: { pipeline: 'orders', undo: 'run-1', deploymentId: 'd-1' }, says: ['rollback request.deploymentId', 'exactly one of "deploymentId"'] },
    { name: 'undo with units and cascade', request: { pipeline: 'orders', undo: 'run-1', units: ['mart'], cascade: false }, says: ['rollback request.units', 'rollback request.cascade', 'cannot be given with "undo"'] },
    { name: 'a malformed run id', request: { pipeline: 'orders', undo: 'run 1; drop' }, says: ['rollback request.undo', 'must be 1-80 characters'] },
  ])('$name: InputError naming the field', async ({ name, request, says }) => {
    const out = await runLocal('rollback', request, { name: `undo-bad-${name.replace(/\W+/g, '-')}` });
    expect(out).toMatchObject({ status: 'FAILED', error: 'InputError' });
    if (out.status !== 'FAILED') return;
    for (const text of says) expect(out.cause).toContain(text);
    expect(out.cause).not.toMatch(/ECONNREFUSED|connect/i);
  });

  it('the CLI: undo without a run, or with an unknown option, is exit 2', async () => {
    const io = { out: () => undefined, err: () => undefined };
    expect(await main(['undo'], io)).toBe(2);
    expect(await main(['undo', 'run-1', '--units', 'mart'], io)).toBe(2);
  });

  it('units whose restore is not recorded for undo say why: a change-log prefix (its rollback never lists the prefix first)', () => {
    const unit = (capture?: string) => s3PrefixUnitSchema.parse({ id: 'raw', type: 's3-prefix', bucket: 'lake', prefix: 'raw/', ...(capture ? { capture } : {}) });
    expect(undoRefusal(unit())).toBeUndefined();
    expect(undoRefusal(unit('change-log'))).toMatch(/capture: change-log.*without listing the prefix.*not recorded/);
  });
});
