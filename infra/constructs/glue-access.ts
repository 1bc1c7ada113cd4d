import { Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

export interface GlueAccessProps {
  /**
   * The Glue Data Catalog tables the `glue-table` units name: `database/table`, or `<account id>:database/table` for a
   * table of another account's catalog.
   */
  readonly protectedGlueTables: readonly string[];
  /** Roles that only read the catalog (capture, dry run, restore's read-back, verify). */
  readonly readRoles: readonly IRole[];
  /** The restore handler's role: writes the table and its partitions back. */
  readonly restoreRole: IRole;
}

/** Read: the table's definition and its partitions (capture, diff, restore and verify all read them). */
export const GLUE_READ_ACTIONS = ['glue:GetTable', 'glue:GetPartitions'];
/** Restore: the definition back (UpdateTable, or CreateTable when the deploy dropped it), the partitions in batches. */
export const GLUE_RESTORE_ACTIONS = ['glue:UpdateTable', 'glue:CreateTable', 'glue:BatchCreatePartition', 'glue:BatchDeletePartition', 'glue:BatchUpdatePartition'];

/** `[account:]database/table`; names without "/", "*", "?" or control characters (as the manifest's schema accepts). */
const TABLE_REF = /^(?:(\d{12}):)?([^/*?\s:][^/*?]{0,254})\/([^/*?][^/*?]{0,254})$/u;

export interface GlueTableRef {
  account?: string;
  database: string;
  table: string;
}

export function parseGlueTableRef(text: string, path: string): GlueTableRef {
  const m = TABLE_REF.exec(text.trim());
  if (!m || [...text].some((c) => c.charCodeAt(0) < 0x20)) {
    throw new Error(`${path}: "${text}" is not "database/table" or "<account id>:database/table" (no wildcards)`);
  }
  if (text !== text.toLowerCase()) throw new Error(`${path}: "${text}" must be in lowercase, as the Glue Data Catalog keeps names (and its ARNs name them)`);
  return { ...(m[1] ? { account: m[1] } : {}), database: m[2]!, table: m[3]! };
}

/**
 * Glue Data Catalog access for the glue-table units, named table by table: each statement names the catalog, the
 * database and the table (Glue authorizes a table call against all three). Reading goes to the data handlers, writing to
 * the restore handler only. Nothing deletes a table. Nothing is granted when no table is named.
 */
export class GlueAccess extends Construct {
  readonly policies: readonly Policy[];
  /** Per table: its catalog, database and table ARNs. */
  readonly resourceArns: readonly string[];

  constructor(scope: Construct, id: string, props: GlueAccessProps) {
    super(scope, id);
    const tables = props.protectedGlueTables.map((t, i) => parseGlueTableRef(t, `protectedGlueTables[${i}]`));
    if (tables.length === 0) {
      this.policies = [];
      this.resourceArns = [];
      return;
    }
    const stack = Stack.of(this);
    const arn = (account: string | undefined, resource: string) => `arn:${stack.partition}:glue:${stack.region}:${account ?? stack.account}:${resource}`;
    const resources = [
      ...new Set(
        tables.flatMap((t) => [arn(t.account, 'catalog'), arn(t.account, `database/${t.database}`), arn(t.account, `table/${t.database}/${t.table}`)]),
      ),
    ];
    this.resourceArns = resources;
    const read = new Policy(this, 'Read', {
      statements: [new PolicyStatement({ sid: 'GlueRead', effect: Effect.ALLOW, actions: GLUE_READ_ACTIONS, resources })],
      roles: [...props.readRoles],
    });
    const restore = new Policy(this, 'Restore', {
      statements: [new PolicyStatement({ sid: 'GlueRestore', effect: Effect.ALLOW, actions: GLUE_RESTORE_ACTIONS, resources })],
      roles: [props.restoreRole],
    });
    this.policies = [read, restore];
  }
}
