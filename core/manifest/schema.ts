import { z } from 'zod';

/**
 * The manifest: one pipeline, its units and how they depend on each other.
 * Types are inferred from the schemas, so schema and type cannot drift.
 */

const identifier = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must start with a lowercase letter and hold only a-z, 0-9, "_" or "-" (at most 63 characters)');

/** `table` or `schema.table`; each part a plain SQL identifier (no quoting games). */
export const tableName = z
  .string()
  .regex(
    /^(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$/,
    'must be "table" or "schema.table", each part a SQL identifier (letters, digits, "_", "$"; not starting with a digit; at most 63 characters)',
  );

export const connectionSchema = z.union([
  z.strictObject({ engine: z.enum(['postgres', 'mysql']), url: z.string().regex(/^(postgres|postgresql|mysql|mariadb):\/\//, 'must be a postgres:// or mysql:// URL') }),
  z.strictObject({ engine: z.enum(['postgres', 'mysql']), secretArn: z.string().regex(/^arn:aws[a-z-]*:secretsmanager:/, 'must be a Secrets Manager secret ARN') }),
]);

const checksSchema = z
  .strictObject({
    /** Compare the row/object count with the restore point (default true). */
    count: z.boolean().default(true),
    /** Compare the content checksum with the restore point (default true). */
    checksum: z.boolean().default(true),
  })
  .prefault({});

const unitBase = {
  id: identifier,
  dependsOn: z.array(z.string()).default([]),
  description: z.string().optional(),
  checks: checksSchema,
};

export const s3PrefixUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('s3-prefix'),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name'),
  prefix: z.string().min(1, 'must not be empty (a rollback of a whole bucket is not a unit: name the prefix)'),
});

export const postgresTableUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('postgres-table'),
  connection: z.string().min(1),
  table: tableName,
});

export const unitSchema = z.discriminatedUnion('type', [s3PrefixUnitSchema, postgresTableUnitSchema]);

export const manifestSchema = z.strictObject({
  pipeline: identifier,
  description: z.string().optional(),
  connections: z.record(z.string().regex(/^[a-z][a-z0-9_-]*$/, 'connection names are lowercase identifiers'), connectionSchema).default({}),
  units: z.array(unitSchema).min(1, 'a manifest needs at least one unit'),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type Unit = z.infer<typeof unitSchema>;
export type UnitType = Unit['type'];
export type S3PrefixUnit = z.infer<typeof s3PrefixUnitSchema>;
export type PostgresTableUnit = z.infer<typeof postgresTableUnitSchema>;
export type Connection = z.infer<typeof connectionSchema>;
