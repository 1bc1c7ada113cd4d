import { describe, expect, it } from 'vitest';
import { InputError, ManifestError } from '../../core/errors.ts';
import { validateManifest } from '../../core/manifest/load.ts';
import type { Manifest } from '../../core/manifest/schema.ts';
import { planRollback, type Plan, type PlanOptions } from '../../core/plan/plan.ts';

/** A valid manifest of S3 prefix units from `{ unit: [its producers] }`, in the order given. */
function pipeline(dependsOn: Record<string, string[]>): Manifest {
  return validateManifest({
    pipeline: 'orders',
    units: Object.entries(dependsOn).map(([id, producers]) => ({ id, type: 's3-prefix', bucket: 'orders-lake', prefix: `${id}/`, dependsOn: producers })),
  });
}

const chain = pipeline({ raw: [], staging: ['raw'], mart: ['staging'] });
/** raw feeds two staging tables; both feed the mart; a report reads the mart and an export reads raw directly. */
const diamond = pipeline({ raw: [], orders: ['raw'], customers: ['raw'], mart: ['orders', 'customers'], report: ['mart'], export: ['raw'] });

interface PlanCase {
  name: string;
  manifest: Manifest;
  options?: PlanOptions;
  expected: Omit<Plan, 'pipeline'>;
}

const cases: PlanCase[] = [
  {
    name: 'rolls the whole chain back consumers first when no unit is named',
    manifest: chain,
    expected: {
      requested: ['mart', 'raw', 'staging'],
      scope: ['mart', 'staging', 'raw'],
      stages: [['mart'], ['staging'], ['raw']],
      reasons: { mart: 'requested', raw: 'requested', staging: 'requested' },
    },
  },
  {
    name: 'treats an empty list of units like no list: the whole pipeline',
    manifest: chain,
    options: { units: [] },
    expected: {
      requested: ['mart', 'raw', 'staging'],
      scope: ['mart', 'staging', 'raw'],
      stages: [['mart'], ['staging'], ['raw']],
      reasons: { mart: 'requested', raw: 'requested', staging: 'requested' },
    },
  },
  {
    name: 'cascades from staging to the mart built from it, and leaves raw alone',
    manifest: chain,
    options: { units: ['staging'] },
    expected: {
      requested: ['staging'],
      scope: ['mart', 'staging'],
      stages: [['mart'], ['staging']],
      reasons: { mart: 'downstream of staging', staging: 'requested' },
    },
  },
  {
    name: 'rolls back only what was asked without cascade',
    manifest: chain,
    options: { units: ['staging'], cascade: false },
    expected: { requested: ['staging'], scope: ['staging'], stages: [['staging']], reasons: { staging: 'requested' } },
  },
  {
    name: 'keeps a consumer before its producer without cascade, even with the unit between them left out',
    manifest: chain,
    options: { units: ['raw', 'mart'], cascade: false },
    expected: { requested: ['mart', 'raw'], scope: ['mart', 'raw'], stages: [['mart'], ['raw']], reasons: { mart: 'requested', raw: 'requested' } },
  },
  {
    name: 'puts a leaf first: nothing depends on the mart',
    manifest: chain,
    options: { units: ['mart'] },
    expected: { requested: ['mart'], scope: ['mart'], stages: [['mart']], reasons: { mart: 'requested' } },
  },
  {
    name: 'places each unit by its longest chain of consumers, and runs independent units together',
    manifest: diamond,
    options: { units: ['raw'] },
    expected: {
      requested: ['raw'],
      scope: ['export', 'report', 'mart', 'customers', 'orders', 'raw'],
      stages: [['export', 'report'], ['mart'], ['customers', 'orders'], ['raw']],
      reasons: {
        raw: 'requested',
        orders: 'downstream of raw',
        customers: 'downstream of raw',
        mart: 'downstream of customers, orders',
        report: 'downstream of mart',
        export: 'downstream of raw',
      },
    },
  },
  {
    name: 'merges the downstream units of several requested units, once each',
    manifest: diamond,
    options: { units: ['orders', 'customers', 'orders'] },
    expected: {
      requested: ['customers', 'orders'],
      scope: ['report', 'mart', 'customers', 'orders'],
      stages: [['report'], ['mart'], ['customers', 'orders']],
      reasons: { customers: 'requested', orders: 'requested', mart: 'downstream of customers, orders', report: 'downstream of mart' },
    },
  },
  {
    name: 'says "requested" for a unit both asked for and downstream of another asked for',
    manifest: chain,
    options: { units: ['raw', 'mart'] },
    expected: {
      requested: ['mart', 'raw'],
      scope: ['mart', 'staging', 'raw'],
      stages: [['mart'], ['staging'], ['raw']],
      reasons: { mart: 'requested', raw: 'requested', staging: 'downstream of raw' },
    },
  },
];

describe('planRollback', () => {
  it.each(cases)('$name', ({ manifest, options, expected }) => {
    expect(planRollback(manifest, options)).toEqual({ pipeline: 'orders', ...expected });
  });

  it('rejects an unknown requested unit, naming it and the known units', () => {
    expect(() => planRollback(chain, { units: ['stg'] })).toThrow(
      new InputError('unknown unit "stg" requested for pipeline "orders" (known: mart, raw, staging); check the names against the manifest'),
    );
  });

  it('names every unknown requested unit at once', () => {
    const error = (() => {
      try {
        planRollback(chain, { units: ['mart', 'stg', 'rwa'] });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(InputError);
    expect((error as InputError).name).toBe('InputError');
    expect((error as InputError).message).toMatch(/^unknown units "stg", "rwa" requested/);
  });

  it('refuses a manifest with a cycle that was built in code without validation', () => {
    const cyclic: Manifest = {
      ...chain,
      units: chain.units.map((unit) => (unit.id === 'raw' ? { ...unit, dependsOn: ['mart'] } : unit)),
    };
    expect(() => planRollback(cyclic)).toThrow(ManifestError);
    expect(() => planRollback(cyclic)).toThrow(/units\[0\]\.dependsOn\[0\]: dependency cycle: raw -> staging -> mart -> raw/);
  });

  it('refuses a manifest built in code whose dependsOn names a unit that does not exist', () => {
    const broken: Manifest = { ...chain, units: [...chain.units, { ...chain.units[0]!, id: 'extra', dependsOn: ['ghost'] }] };
    expect(() => planRollback(broken)).toThrow(/units\[3\]\.dependsOn\[0\]: unknown unit "ghost"/);
  });
});
