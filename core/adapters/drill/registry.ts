import type { Unit } from '../../manifest/schema.ts';
import { mysqlScratch } from './mysql-scratch.ts';
import { postgresScratch } from './postgres-scratch.ts';
import { rdsClusterScratch, rdsInstanceScratch } from './rds-scratch.ts';
import { s3Scratch } from './s3-scratch.ts';
import type { ScratchTarget } from './types.ts';

/** The scratch target of each unit type a drill can rehearse. A type without one is reported as not rehearsed. */
const scratchTargets: Partial<{ [T in Unit['type']]: ScratchTarget<Extract<Unit, { type: T }>, never> }> = {
  's3-prefix': s3Scratch as unknown as ScratchTarget<Extract<Unit, { type: 's3-prefix' }>, never>,
  'postgres-table': postgresScratch as unknown as ScratchTarget<Extract<Unit, { type: 'postgres-table' }>, never>,
  'rds-instance': rdsInstanceScratch as unknown as ScratchTarget<Extract<Unit, { type: 'rds-instance' }>, never>,
  'rds-cluster': rdsClusterScratch as unknown as ScratchTarget<Extract<Unit, { type: 'rds-cluster' }>, never>,
  'mysql-table': mysqlScratch as unknown as ScratchTarget<Extract<Unit, { type: 'mysql-table' }>, never>,
};

export function scratchTargetFor(unit: Unit): ScratchTarget<Unit, Record<string, unknown>> | undefined {
  return scratchTargets[unit.type] as unknown as ScratchTarget<Unit, Record<string, unknown>> | undefined;
}
