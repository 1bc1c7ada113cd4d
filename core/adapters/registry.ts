import type { Unit } from '../manifest/schema.ts';
import { customAdapter } from './custom.ts';
import { glueTableAdapter } from './glue-table.ts';
import { mysqlTableAdapter } from './mysql-table.ts';
import { createPostgresTableAdapter } from './postgres-table.ts';
import { DEFAULT_SEAL_SLICING } from './postgres/copy-on-write.ts';
import { rdsClusterAdapter } from './rds-cluster.ts';
import { rdsInstanceAdapter } from './rds-instance.ts';
import { s3PrefixAdapter } from './s3-prefix.ts';
import type { UnitAdapter } from './types.ts';

/** One adapter per unit type. A new unit type adds one line here (and its schema and adapter file). */
export const adapters: { [T in Unit['type']]: UnitAdapter<Extract<Unit, { type: T }>, never> } = {
  's3-prefix': s3PrefixAdapter as unknown as UnitAdapter<Extract<Unit, { type: 's3-prefix' }>, never>,
  // A first copy-on-write seal of a large table is read in slices (pending between them), within a call's timeout.
  'postgres-table': createPostgresTableAdapter({ sealing: DEFAULT_SEAL_SLICING }) as unknown as UnitAdapter<Extract<Unit, { type: 'postgres-table' }>, never>,
  'rds-instance': rdsInstanceAdapter as UnitAdapter<Extract<Unit, { type: 'rds-instance' }>, never>,
  'rds-cluster': rdsClusterAdapter as UnitAdapter<Extract<Unit, { type: 'rds-cluster' }>, never>,
  'mysql-table': mysqlTableAdapter as unknown as UnitAdapter<Extract<Unit, { type: 'mysql-table' }>, never>,
  'glue-table': glueTableAdapter as UnitAdapter<Extract<Unit, { type: 'glue-table' }>, never>,
  custom: customAdapter as UnitAdapter<Extract<Unit, { type: 'custom' }>, never>,
};

export type AdapterRegistry = typeof adapters;

/** The adapter for a unit, typed loosely for callers that hold a Unit of any type. */
export function adapterFor(unit: Unit, registry: AdapterRegistry = adapters): UnitAdapter<Unit, Record<string, unknown>> {
  return registry[unit.type] as unknown as UnitAdapter<Unit, Record<string, unknown>>;
}
