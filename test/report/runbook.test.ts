import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadManifestFile } from '../../core/manifest/load.ts';
import type { Manifest } from '../../core/manifest/schema.ts';
import { planRollback } from '../../core/plan/plan.ts';
import { renderRunbook, unitAction } from '../../core/report/runbook.ts';
import { acyclicPipeline, toManifest, type Pipeline } from '../support/generated-pipelines.ts';

/** Positions of each stage heading and each unit heading; -1 when missing. */
function positions(text: string, stages: string[][]): { stages: number[]; units: number[] } {
  const stagePos = stages.map((units, s) => text.indexOf(`## Stage ${s + 1} of ${stages.length}: ${units.join(', ')}\n`));
  const unitPos = stages.flatMap((units, s) => units.map((id, j) => text.indexOf(`### ${s + 1}.${j + 1} \`${id}\` (`)));
  return { stages: stagePos, units: unitPos };
}

const increasing = (xs: number[]) => xs.every((x, i) => x >= 0 && (i === 0 || x > xs[i - 1]!));

/** Unit types the runbook knows, and one it does not (a type added later renders generically). */
const TYPES = ['s3-prefix', 'postgres-table', 'mysql-table', 'rds-instance', 'rds-cluster', 'glue-table', 'custom-thing'] as const;

/** The generated pipeline with a type per unit (fields each type needs; not validated, the runbook reads any). */
function typedManifest(p: Pipeline, types: string[]): Manifest {
  const base = toManifest(p);
  const fields: Record<string, (id: string) => Record<string, unknown>> = {
    's3-prefix': (id) => ({ bucket: 'orders-lake', prefix: `${id}/` }),
    'postgres-table': (id) => ({ connection: 'warehouse', table: `public.${id}`, assertions: [{ name: `${id} not empty`, sql: `SELECT count(*) > 0 FROM public.${id}` }] }),
    'mysql-table': (id) => ({ connection: 'shop', table: id, where: "status = 'open'" }),
    'rds-instance': (id) => ({ instanceId: `db-${id}` }),
    'rds-cluster': (id) => ({ clusterId: `cl-${id}` }),
    'glue-table': (id) => ({ database: 'lake', table: id, partitions: "dt >= '2026-11-01'" }),
    'custom-thing': () => ({ endpoint: 'https://example.invalid' }),
  };
  const units = base.units.map((u, i) => {
    const type = types[i % types.length]!;
    return { id: u.id, dependsOn: u.dependsOn, checks: u.checks, type, ...fields[type]!(u.id) };
  });
  return { ...base, units } as unknown as Manifest;
}

describe('runbook', () => {
  it('every stage and every unit of the plan appears, once, in the plan\'s order (generated pipelines, any unit types, any units asked for)', () => {
    fc.assert(
      fc.property(
        acyclicPipeline.chain((p) => fc.tuple(fc.constant(p), fc.subarray(p.ids), fc.array(fc.constantFrom(...TYPES), { minLength: 1, maxLength: 7 }), fc.boolean())),
        ([p, asked, types, cascade]) => {
          const manifest = typedManifest(p, types);
          const plan = planRollback(manifest, { units: asked, cascade });
          const text = renderRunbook({ manifest, plan, manifestPath: 'generated.yaml', deploymentId: 'd-1' });
          const pos = positions(text, plan.stages);
          expect(increasing(pos.stages), text).toBe(true);
          expect(increasing(pos.units), text).toBe(true);
          // Each unit heading sits inside its own stage: after its stage heading and before the next one.
          plan.stages.forEach((units, s) => {
            const next = pos.stages[s + 1] ?? text.length;
            for (const id of units) {
              const at = text.indexOf(`\`${id}\` (`, pos.stages[s]);
              expect(at).toBeGreaterThan(pos.stages[s]!);
              expect(at).toBeLessThan(next);
            }
          });
          // Exactly the plan's stages and units: no heading for anything out of scope.
          expect(text.match(/^## Stage /gm)?.length ?? 0).toBe(plan.stages.length);
          expect(text.match(/^### /gm)?.length ?? 0).toBe(plan.scope.length);
          // Every unit gets its by-hand command, and every assertion its SQL.
          for (const id of plan.scope) expect(text).toContain(`--units ${id} --no-cascade`);
          for (const u of manifest.units.filter((x) => plan.scope.includes(x.id) && x.type === 'postgres-table')) {
            expect(text).toContain(`  SELECT count(*) > 0 FROM public.${u.id}`);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('units asked for without their consumers: the commands and the console input say so', () => {
    const manifest = toManifest({ ids: ['raw', 'mart'], dependsOn: new Map([['raw', []], ['mart', ['raw']]]), order: ['raw', 'mart'] });
    const plan = planRollback(manifest, { units: ['raw'], cascade: false });
    const text = renderRunbook({ manifest, plan, manifestPath: 'm.yaml', deploymentId: 'd-1', cascade: false });
    expect(text).toContain('etl-rollback rollback m.yaml --deployment d-1 --units raw --no-cascade --reason "…"');
    expect(text).toContain('"cascade": false');
    expect(text).not.toContain('`mart`');
  });

  it('a unit type the runbook does not know is described generically, never left out', () => {
    expect(unitAction({ id: 'x', type: 'custom-thing' })).toContain('adapter of its type (`custom-thing`)');
  });

  it('the demo pipeline (examples/orders.yaml): stages, commands, checks, approval, estimate, failure handling', async () => {
    const manifest = await loadManifestFile('examples/orders.yaml');
    const plan = planRollback(manifest, {});
    const text = renderRunbook({ manifest, plan, manifestPath: 'examples/orders.yaml', deploymentId: 'd-42', lockTtlSeconds: 6 * 3600 });
    // Consumers first: mart, staging, raw, one stage each.
    const mart = text.indexOf('## Stage 1 of 3: mart');
    const staging = text.indexOf('## Stage 2 of 3: staging');
    const raw = text.indexOf('## Stage 3 of 3: raw');
    expect(mart).toBeGreaterThan(0);
    expect(staging).toBeGreaterThan(mart);
    expect(raw).toBeGreaterThan(staging);
    expect(text).toContain('### 1.1 `mart` (postgres-table, warehouse:mart.daily_orders)');
    expect(text).toContain('### 3.1 `raw` (s3-prefix, s3://orders-lake/raw/orders/)');
    // How to start it, whole and unit by unit, from the CLI and the console.
    expect(text).toContain('etl-rollback rollback examples/orders.yaml --deployment d-42 --reason "…"');
    expect(text).toContain('etl-rollback rollback examples/orders.yaml --deployment d-42 --dry-run');
    expect(text).toContain('etl-rollback rollback examples/orders.yaml --deployment d-42 --units staging --no-cascade --reason "…"');
    expect(text).toContain('{"pipeline":"orders","deploymentId":"d-42","units":["raw"],"cascade":false,"requestedBy":"<you>","reason":"<why>"}');
    // Equivalents by hand and the checks afterwards.
    expect(text).toContain(`psql "$WAREHOUSE_URL" -c 'SELECT count(*) FROM mart.daily_orders'`);
    expect(text).toContain("aws s3api list-object-versions --bucket orders-lake --prefix 'raw/orders/'");
    expect(text).toContain("the gate after stage 1 checks that the row count equals the restore point's and the content checksum equals the restore point's");
    expect(text).toContain('the gate after stage 3 checks that the object count equals');
    // Policy: windows, approval (four eyes), paused triggers.
    expect(text).toContain('| maintenance windows | Sat 00:00-06:00 UTC; daily 02:00-04:00 UTC');
    expect(text).toContain('| approval | required within 240 min: `etl-rollback approve <run> --reason "…"` by someone other than the requester |');
    expect(text).toContain("**Who approves:** the run's approver (policy.approval, not the requester)");
    expect(text).toContain('rule orders-nightly-load, rule etl/orders-late-files, schedule etl/orders-hourly-refresh');
    // Durations from the core estimate (defaults without history), per unit and in total; never "no estimate" here.
    expect(text).toMatch(/\| expected duration \| [\d.]+ s \(defaults, no history/);
    expect(text).toMatch(/\*\*Expected duration:\*\* [\d.]+ s to restore, [\d.]+ s to verify/);
    expect(text).not.toContain('no estimate');
    // What to do when it fails.
    expect(text).toContain('etl-rollback rollback examples/orders.yaml --deployment d-42 --resume <run>');
    expect(text).toContain('the lock expires by itself after 6 h');
    expect(text).toContain('etl-rollback unlock orders --reason "…"');
  });

  it('with restore points: their counts and capture times, and a worst-case estimate', () => {
    const manifest = toManifest({ ids: ['raw'], dependsOn: new Map([['raw', []]]), order: ['raw'] });
    const plan = planRollback(manifest, {});
    const text = renderRunbook({
      manifest,
      plan,
      manifestPath: 'm.yaml',
      deploymentId: 'd-1',
      restorePoints: [{ unitId: 'raw', type: 's3-prefix', capturedAt: '2026-11-28T01:02:03.000Z', count: 1200, checksum: 'abcdef0123456789ff', details: {} }],
    });
    expect(text).toContain('- **Restore point:** 1200 objects, captured at 2026-11-28T01:02:03.000Z, checksum `abcdef0123456789`.');
    expect(text).toContain("the object count equals the restore point's (1200)");
    expect(text).toContain('worst case: every captured object or row written back');
    const none = renderRunbook({ manifest, plan, manifestPath: 'm.yaml', deploymentId: 'd-1', restorePoints: [] });
    expect(none).toContain('none in the ledger for deployment `d-1`');
  });
});

describe('the start notification links the runbook', () => {
  it('names its s3:// URL in the message and the event detail', async () => {
    const { rollbackStarted } = await import('../../core/workflow/notify.ts');
    const n = rollbackStarted(
      { runId: 'r-1', pipeline: 'orders', deploymentId: 'd-1', requestedBy: 'ana', reason: 'bad load', stages: [{ index: 0, units: ['mart'] }], urgent: false },
      { windows: [], approvalRequired: false, pausedTriggers: [] },
      's3://state/runbooks/orders/r-1.md',
    );
    expect(n.message).toContain('Runbook: s3://state/runbooks/orders/r-1.md');
    expect(n.detail).toMatchObject({ runbook: 's3://state/runbooks/orders/r-1.md' });
  });
});
