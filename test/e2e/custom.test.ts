import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/**
 * The "external system" the handlers compensate in: what was published downstream, what was retracted, and every call
 * a handler got (the handlers run in this process, so they share this object with the test through globalThis).
 */
interface Downstream {
  published: Record<string, string[]>;
  retracted: Record<string, string[]>;
  calls: { unitId: string; action: string; dryRun: boolean; runId?: string; restorePoint?: unknown; module: string }[];
  unverified: Set<string>;
}
const downstream: Downstream = { published: {}, retracted: {}, calls: [], unverified: new Set() };
(globalThis as { __customTestDownstream?: Downstream }).__customTestDownstream = downstream;

/**
 * A handler that follows the contract: capture records the ids already published for its unit; restore retracts every
 * id published since (each once: a rerun retracts nothing); verify checks that none is left.
 */
const RETRACT = `
const ds = () => globalThis.__customTestDownstream;
export async function handler(req) {
  const d = ds();
  d.calls.push({ unitId: req.unitId, action: req.action, dryRun: req.dryRun, runId: req.runId, restorePoint: req.restorePoint, module: 'retract' });
  const published = d.published[req.unitId] ?? [];
  const retracted = (d.retracted[req.unitId] ??= []);
  if (req.action === 'capture') return { restorePoint: { before: [...published] }, changed: { messagesRecorded: published.length }, message: published.length + ' message(s) published before the deploy' };
  const before = new Set(req.restorePoint.before);
  const todo = published.filter((id) => !before.has(id) && !retracted.includes(id));
  if (req.action === 'verify') {
    if (d.unverified.has(req.unitId)) return { changed: {}, verified: false, message: 'downstream still shows ' + published.length + ' message(s): the consumer has not applied the retractions' };
    return { changed: {}, verified: todo.length === 0, message: todo.length === 0 ? 'every message of the deploy is retracted' : todo.length + ' not retracted: ' + todo.join(', ') };
  }
  if (!req.dryRun) retracted.push(...todo);
  return { changed: { retractionsSent: todo.length }, message: (req.dryRun ? 'would retract ' : 'retracted ') + (todo.join(', ') || 'nothing') };
}
`;

/** A handler whose restore fails (the API it calls is down); capture and verify work. */
const FAILING = `
export async function compensate(req) {
  globalThis.__customTestDownstream.calls.push({ unitId: req.unitId, action: req.action, dryRun: req.dryRun, runId: req.runId, module: 'failing' });
  if (req.action === 'capture') return { restorePoint: { token: 't-1' }, changed: {}, message: 'ok' };
  if (req.action === 'restore' && !req.dryRun) throw new Error('billing API answered 503 Service Unavailable: no credit notes issued');
  return { changed: { creditNotes: 2 }, verified: true, message: 'would issue 2 credit notes' };
}
`;

/** A handler whose restore answer breaks the contract (counter as text, no message). */
const MALFORMED = `
export async function handler(req) {
  if (req.action === 'capture') return { restorePoint: null, changed: {}, message: 'nothing to record' };
  return { changed: { messagesSent: 'three' }, verified: true };
}
`;

const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-custom-'));
writeFileSync(join(dir, 'retract.ts'), RETRACT);
writeFileSync(join(dir, 'failing.mjs'), FAILING);
writeFileSync(join(dir, 'malformed.ts'), MALFORMED);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

function manifestFile(name: string, manifest: unknown): string {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, stringify(manifest));
  return path;
}

const unitOf = (report: RunReport, unitId: string) => report.stages.flatMap((st) => st.units).find((u) => u.unitId === unitId)!;
const retract = { module: './retract.ts' };

describe('custom units: compensating actions through the local state machines (CLI, handlers in this process)', () => {
  const ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);

  describe('a handler that follows the contract', () => {
    const pipeline = uniqueName('notices');
    let path = '';
    beforeAll(() => {
      path = manifestFile(pipeline, {
        pipeline,
        units: [
          { id: 'events', type: 'custom', handler: retract, timeoutSeconds: 30 },
          { id: 'emails', type: 'custom', handler: { ...retract, export: 'handler' }, dependsOn: ['events'] },
        ],
      });
      downstream.published.events = ['e-1', 'e-2'];
      downstream.published.emails = ['m-1'];
    });

    it('validate and plan name the handlers', async () => {
      const v = await cli('validate', path);
      expect(v.code, v.stderr).toBe(0);
      expect(v.stdout).toContain('emails (custom handler:./retract.ts#handler)');
    });

    it('snapshot keeps the handler\'s restore point; dry run reports its counters and changes nothing; rollback compensates stage by stage, verified; a rerun sends nothing', async () => {
      const snap = await cli('snapshot', path, '--deployment', 'd-1', '--local', '--json');
      expect(snap.code, snap.stderr).toBe(0);
      const point = await ledger.getRestorePoint(pipeline, 'd-1', 'events');
      expect(point).toMatchObject({ type: 'custom', count: 2, details: { handler: { module: './retract.ts', export: 'handler' }, restorePoint: { before: ['e-1', 'e-2'] } } });
      expect(point!.checksum).toMatch(/^sha256:[0-9a-f]{64}$/);
      const plain = await cli('snapshot', path, '--deployment', 'd-2', '--local');
      expect(plain.stdout).toContain('events (custom): 2 recorded by its handler');

      // The deploy publishes what it should not have.
      downstream.published.events!.push('e-3', 'e-4');
      downstream.published.emails!.push('m-2');

      const dry = await cli('rollback', path, '--deployment', 'd-1', '--dry-run', '--local', '--json');
      expect(dry.code, dry.stderr).toBe(0);
      const dryReport = (JSON.parse(dry.stdout) as { report: RunReport }).report;
      expect(unitOf(dryReport, 'events')).toMatchObject({ status: 'WOULD_CHANGE', changes: { retractionsSent: 2 }, writes: 2, notes: ['would retract e-3, e-4'] });
      expect(unitOf(dryReport, 'emails')).toMatchObject({ changes: { retractionsSent: 1 } });
      expect(downstream.retracted).toEqual({ events: [], emails: [] });
      const dryCalls = downstream.calls.filter((c) => c.runId === dryReport.runId);
      expect(dryCalls.map((c) => [c.unitId, c.action, c.dryRun]).sort()).toEqual([['emails', 'restore', true], ['events', 'restore', true]]);
      expect(dryCalls.find((c) => c.unitId === 'events')!.restorePoint).toEqual({ before: ['e-1', 'e-2'] });

      const r = await cli('rollback', path, '--deployment', 'd-1', '--local', '--json');
      expect(r.code, r.stderr).toBe(0);
      const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
      // Consumers first: emails, then events; each gate asked its handler.
      expect(report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([
        [['emails'], 'VERIFIED'],
        [['events'], 'VERIFIED'],
      ]);
      expect(unitOf(report, 'events')).toMatchObject({ changes: { retractionsSent: 2 }, writes: 2, checks: [{ name: 'compensation', ok: true, detail: 'every message of the deploy is retracted' }] });
      expect(downstream.retracted).toEqual({ events: ['e-3', 'e-4'], emails: ['m-2'] });
      const runCalls = downstream.calls.filter((c) => c.runId === report.runId).map((c) => `${c.unitId} ${c.action}${c.dryRun ? ' (dry run)' : ''}`);
      expect(runCalls).toEqual(['emails restore', 'emails verify', 'events restore', 'events verify']);

      const again = await cli('rollback', path, '--deployment', 'd-1', '--local', '--json');
      expect(again.code, again.stderr).toBe(0);
      expect((JSON.parse(again.stdout) as { report: RunReport }).report.totals.writes).toBe(0);
      expect(downstream.retracted).toEqual({ events: ['e-3', 'e-4'], emails: ['m-2'] });
    });

    it('a handler answering verified: false fails the gate with its message (exit 1); later stages do not start', async () => {
      downstream.unverified.add('emails');
      try {
        const r = await cli('rollback', path, '--deployment', 'd-1', '--local', '--json');
        expect(r.code).toBe(1);
        const out = JSON.parse(r.stdout) as { error: string; cause: string; report: RunReport };
        expect(out.error).toBe('VerificationFailedError');
        expect(out.cause).toContain('emails: compensation expected verified, got not verified (downstream still shows 2 message(s): the consumer has not applied the retractions)');
        expect(out.report.stages.map((st) => st.status)).toEqual(['VERIFY_FAILED', 'NOT_STARTED']);
      } finally {
        downstream.unverified.delete('emails');
      }
    });
  });

  describe('a handler that fails', () => {
    const pipeline = uniqueName('billing');
    let path = '';
    beforeAll(() => {
      // Stage 1: ledger-events (works); stage 2: credit-notes (its restore throws); stage 3: invoices (never reached).
      path = manifestFile(pipeline, {
        pipeline,
        units: [
          { id: 'invoices', type: 'custom', handler: retract },
          { id: 'credit-notes', type: 'custom', handler: { module: './failing.mjs', export: 'compensate' }, dependsOn: ['invoices'] },
          { id: 'ledger-events', type: 'custom', handler: retract, dependsOn: ['credit-notes'] },
        ],
      });
      downstream.published.invoices = ['i-1'];
      downstream.published['ledger-events'] = ['l-1'];
    });

    it('stops the run at its stage with the handler\'s message: exit 1, CompensationFailedError, the report partial with the unit FAILED', async () => {
      const snap = await cli('snapshot', path, '--deployment', 'd-1', '--local');
      expect(snap.code, snap.stderr).toBe(0);
      downstream.published.invoices!.push('i-2');
      downstream.published['ledger-events']!.push('l-2');

      const dry = await cli('rollback', path, '--deployment', 'd-1', '--dry-run', '--local', '--json');
      expect(dry.code, dry.stderr).toBe(0);
      expect(unitOf((JSON.parse(dry.stdout) as { report: RunReport }).report, 'credit-notes').changes).toEqual({ creditNotes: 2 });

      const r = await cli('rollback', path, '--deployment', 'd-1', '--local', '--json');
      expect(r.code).toBe(1);
      const out = JSON.parse(r.stdout) as { status: string; error: string; cause: string; report: RunReport };
      expect(out.status).toBe('FAILED');
      expect(out.error).toBe('CompensationFailedError');
      expect(out.cause).toBe('unit "credit-notes": handler ./failing.mjs#compensate failed at restore: billing API answered 503 Service Unavailable: no credit notes issued');
      expect(out.report.status).toBe('FAILED');
      expect(out.report.partial).toBe(true);
      expect(out.report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'FAILED', 'NOT_STARTED']);
      expect(unitOf(out.report, 'credit-notes')).toMatchObject({ status: 'FAILED', writes: 0 });
      expect(unitOf(out.report, 'credit-notes').notes).toEqual([`restore failed: CompensationFailedError: ${out.cause}`]);
      expect(out.report.error).toEqual({ name: 'CompensationFailedError', message: out.cause });
      // The stage after it never started: its handler was not asked to restore, its messages are not retracted.
      expect(downstream.retracted.invoices ?? []).toEqual([]);
      expect(downstream.calls.some((c) => c.unitId === 'invoices' && c.action === 'restore' && !c.dryRun)).toBe(false);
      expect(downstream.retracted['ledger-events']).toEqual(['l-2']);
      expect((await ledger.getDeployment(pipeline, 'd-1'))?.status).toBe('ROLLBACK_FAILED');
      expect(await ledger.getLock(pipeline)).toBeUndefined();

      // The text report says it too.
      const text = await cli('rollback', path, '--deployment', 'd-1', '--local');
      expect(text.code).toBe(1);
      expect(text.stdout).toContain('PARTIAL');
      expect(text.stdout).toContain('credit-notes (custom): FAILED');
      expect(text.stdout).toContain('billing API answered 503 Service Unavailable');
      expect(text.stderr).toContain('rollback failed: CompensationFailedError');
    });
  });

  describe('a handler that breaks the contract', () => {
    it('a malformed answer fails the unit with a message naming the handler and what is wrong', async () => {
      const pipeline = uniqueName('malformed');
      const path = manifestFile(pipeline, { pipeline, units: [{ id: 'webhook', type: 'custom', handler: { module: './malformed.ts' } }] });
      const snap = await cli('snapshot', path, '--deployment', 'd-1', '--local');
      expect(snap.code, snap.stderr).toBe(0);
      expect((await ledger.getRestorePoint(pipeline, 'd-1', 'webhook'))?.details).toMatchObject({ restorePoint: null });
      const r = await cli('rollback', path, '--deployment', 'd-1', '--local', '--json');
      expect(r.code).toBe(1);
      const out = JSON.parse(r.stdout) as { error: string; cause: string; report: RunReport };
      expect(out.error).toBe('CompensationFailedError');
      expect(out.cause).toMatch(/^unit "webhook": handler \.\/malformed\.ts#handler gave a malformed answer to "restore": /);
      expect(out.cause).toContain('changed.messagesSent: ');
      expect(out.cause).toContain('message: ');
      expect(unitOf(out.report, 'webhook').status).toBe('FAILED');
    });

    it('a module or export that is not there is bad input (exit 2), named before anything is captured', async () => {
      const pipeline = uniqueName('missing');
      const path = manifestFile(pipeline, { pipeline, units: [{ id: 'hook', type: 'custom', handler: { module: './retract.ts', export: 'nope' } }] });
      const r = await cli('snapshot', path, '--deployment', 'd-1', '--local', '--json');
      expect(r.code).toBe(2);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: 'InputError' });
      expect(JSON.parse(r.stdout).cause).toContain('has no exported function "nope" (its functions: handler)');
      const gone = manifestFile(`${pipeline}-2`, { pipeline: `${pipeline}-2`, units: [{ id: 'hook', type: 'custom', handler: { module: './gone.ts' } }] });
      const r2 = await cli('snapshot', gone, '--deployment', 'd-1', '--local', '--json');
      expect(r2.code).toBe(2);
      expect(JSON.parse(r2.stdout).cause).toContain('handler module ./gone.ts not found');
    });

    it('a snapshot in AWS (without --local) of module handlers is refused before it starts (exit 2)', async () => {
      const pipeline = uniqueName('remote');
      const path = manifestFile(pipeline, { pipeline, units: [{ id: 'hook', type: 'custom', handler: retract }] });
      const r = await cli('snapshot', path, '--deployment', 'd-1', '--state-machine-arn', 'arn:aws:states:us-east-1:123456789012:stateMachine:not-there');
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('custom unit(s) hook (./retract.ts) name a module handler, which runs only with --local');
      expect(r.stderr).not.toContain('started');
    });

    it('the manifest refuses a handler with both or neither of lambdaArn and module, and a malformed ARN', async () => {
      const path = manifestFile('bad', {
        pipeline: 'bad',
        units: [
          { id: 'a', type: 'custom', handler: { module: './retract.ts', lambdaArn: 'arn:aws:lambda:eu-west-1:123456789012:function:x' } },
          { id: 'b', type: 'custom', handler: {} },
          { id: 'c', type: 'custom', handler: { lambdaArn: 'arn:aws:lambda:eu-west-1:123456789012:function:*' } },
          { id: 'd', type: 'custom', handler: { module: '/abs/path.ts' }, timeoutSeconds: 0 },
        ],
      });
      const r = await cli('validate', path);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('units[0].handler.module');
      expect(r.stderr).toContain('give either "lambdaArn" or "module", not both');
      expect(r.stderr).toContain('units[1].handler');
      expect(r.stderr).toContain('needs "lambdaArn" (a Lambda function) or "module"');
      expect(r.stderr).toContain('units[2].handler.lambdaArn');
      expect(r.stderr).toContain('units[3].handler.module');
      expect(r.stderr).toContain('units[3].timeoutSeconds');
    });
  });
});
