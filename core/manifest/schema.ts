import { z } from 'zod';
import { drillSchema, durationSchema } from './drill.ts';
import { policySchema } from './policy.ts';
import { replaySchema } from './replay.ts';

/**
 * The manifest: one pipeline, its units and how they depend on each other.
 * Types are inferred from the schemas, so schema and type cannot drift.
 *
 * This file holds what one field can know about itself. Checks that need the whole manifest (a `dependsOn` naming a
 * unit that exists, no cycles, a unit's connection being defined and of the right engine) live in `load.ts`.
 */

const identifier = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must start with a lowercase letter and hold only a-z, 0-9, "_" or "-" (at most 63 characters)');

/** `table` or `schema.table`; each part a plain SQL identifier (no quoting games). */
/**
 * One part of a table name: a plain SQL identifier, or a quoted one holding anything printable (spaces, quotes
 * doubled, any script): `"Sales Data"` for PostgreSQL, `` `cart lines` `` for MySQL, each database's own quoting.
 */
const PLAIN_PART = '[A-Za-z_][A-Za-z0-9_$]{0,62}';
const QUOTED_PART = '"(?:[^"\\u0000-\\u001f]|"")+"|`(?:[^`\\u0000-\\u001f]|``)+`';
const TABLE_NAME = new RegExp(`^(?:(?:${PLAIN_PART}|${QUOTED_PART})\\.)?(?:${PLAIN_PART}|${QUOTED_PART})$`, 'u');

/** The parts of a table name as written: `[schema?, table]`, quotes removed and doubled quotes undone. */
export function tableNameParts(text: string): string[] {
  const parts: string[] = [];
  for (let i = 0; i < text.length; ) {
    const q = text[i];
    if (q === '"' || q === '`') {
      let j = i + 1;
      let part = '';
      for (; j < text.length; j++) {
        if (text[j] === q && text[j + 1] === q) {
          part += q;
          j++;
        } else if (text[j] === q) break;
        else part += text[j];
      }
      parts.push(part);
      i = j + 2; // past the closing quote and the dot
    } else {
      const dot = text.indexOf('.', i);
      parts.push(text.slice(i, dot < 0 ? text.length : dot));
      i = dot < 0 ? text.length : dot + 1;
    }
  }
  return parts;
}

export const tableName = z
  .string()
  .regex(
    TABLE_NAME,
    'must be "table" or "schema.table", each part a SQL identifier (letters, digits, "_", "$"; not starting with a digit) or a quoted one ("Sales Data" in PostgreSQL, `cart lines` in MySQL); at most 63 characters each',
  )
  .refine((t) => tableNameParts(t).every((p) => p.length >= 1 && p.length <= 63), 'each part of the name may hold at most 63 characters');

export const connectionEngines = ['postgres', 'mysql'] as const;
export type ConnectionEngine = (typeof connectionEngines)[number];

/** URL schemes each engine accepts, so that `engine: postgres` with a `mysql://` URL is caught before a deploy. */
const schemesByEngine: Record<ConnectionEngine, readonly string[]> = {
  postgres: ['postgres', 'postgresql'],
  mysql: ['mysql', 'mariadb'],
};

const rdsIdentifier = z
  .string()
  // 41, not RDS's 63: a restore names the copies `<id>-restored-<run>` / `<id>-pre-rollback-<run>` (22 more
  // characters), and the IAM grants match them by the `<id>-` prefix.
  .max(41, 'must be at most 41 characters (RDS allows 63; a rollback adds "-pre-rollback-<run>" to it)')
  .regex(/^[a-zA-Z](?:-?[a-zA-Z0-9])*$/, 'must be an RDS identifier: letters, digits and hyphens, starting with a letter, without "--" or a final "-"');

/**
 * A connection as written: an engine plus exactly one of `url` (local runs) or `secretArn` (AWS).
 * One object rather than a union of two, so a mistake gets one precise message instead of "matches no option".
 */
export const connectionFieldsSchema = z.strictObject({
  engine: z.enum(connectionEngines),
  url: z.string().regex(/^(postgres|postgresql|mysql|mariadb):\/\//, 'must be a postgres://, postgresql://, mysql:// or mariadb:// URL').optional(),
  secretArn: z.string().regex(/^arn:aws[a-z-]*:secretsmanager:/, 'must be a Secrets Manager secret ARN (arn:aws:secretsmanager:…)').optional(),
  /**
   * The RDS instance or Aurora cluster that holds this database. Only a rollback to a time (`--to`) needs it: a table
   * unit on this connection is then restored by a point-in-time restore of that instance or cluster into a temporary
   * copy, from which just the unit's rows are merged back.
   */
  rds: z.union([z.strictObject({ instanceId: rdsIdentifier }), z.strictObject({ clusterId: rdsIdentifier })], {
    error: 'must be { "instanceId": "<RDS instance>" } or { "clusterId": "<Aurora cluster>" }',
  }).optional(),
});

/** Where a connection's database lives in RDS (for a point-in-time restore of its tables). */
export type ConnectionRds = { instanceId: string } | { clusterId: string };
type UrlConnection = { engine: ConnectionEngine; url: string; rds?: ConnectionRds };
type SecretConnection = { engine: ConnectionEngine; secretArn: string; rds?: ConnectionRds };

export const connectionSchema = connectionFieldsSchema
  .superRefine((c, ctx) => {
    if (c.url !== undefined && c.secretArn !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['secretArn'], message: 'give either "url" or "secretArn", not both' });
    } else if (c.url === undefined && c.secretArn === undefined) {
      ctx.addIssue({ code: 'custom', path: [], message: 'needs "url" (local runs) or "secretArn" (AWS)' });
    }
    // zod runs this even when `url` failed its own format check; only a well-formed scheme is compared (and only the
    // scheme is ever quoted: the rest of a URL may hold a password).
    const scheme = c.url === undefined ? undefined : /^([a-z]+):\/\//.exec(c.url)?.[1];
    const accepted: readonly string[] | undefined = schemesByEngine[c.engine];
    if (scheme !== undefined && accepted !== undefined && !accepted.includes(scheme)) {
      ctx.addIssue({
        code: 'custom',
        path: ['url'],
        message: `a ${scheme}:// URL does not fit engine "${c.engine}" (expected ${accepted.map((s) => `${s}://`).join(' or ')})`,
      });
    }
  })
  // Runs only once the refinement passed, so exactly one of url/secretArn is set; the type says so too.
  .transform((c, ctx): UrlConnection | SecretConnection => {
    const rds = c.rds === undefined ? {} : { rds: c.rds };
    if (c.url !== undefined) return { engine: c.engine, url: c.url, ...rds };
    if (c.secretArn !== undefined) return { engine: c.engine, secretArn: c.secretArn, ...rds };
    ctx.addIssue({ code: 'custom', message: 'needs "url" (local runs) or "secretArn" (AWS)' });
    return z.NEVER;
  });

export const checksFieldsSchema = z.strictObject({
  /** Compare the row/object count with the restore point (default true). */
  count: z.boolean().default(true),
  /** Compare the content checksum with the restore point (default true). */
  checksum: z.boolean().default(true),
});

const checksSchema = checksFieldsSchema.prefault({});

/** A user check: a read-only query that must return true once the unit is restored. */
export const assertionSchema = z.strictObject({
  name: z.string().min(1).max(200),
  sql: z.string().min(1).max(10_000),
  /** Statement timeout for the query (default 30 s). */
  timeoutSeconds: z.number().int().min(1).max(900).default(30),
});

const unitBase = {
  id: identifier,
  /** Ids of the units this one reads from (its producers). */
  dependsOn: z.array(z.string()).default([]),
  description: z.string().optional(),
  checks: checksSchema,
};

/**
 * Write freeze of a table unit for the restore's duration: `revokeFrom` names the database roles (PostgreSQL roles;
 * MySQL/MariaDB accounts as `user` or `user@host`, host "%" when omitted) whose write privileges on the table are
 * revoked when the unit's stage starts (PostgreSQL: INSERT, UPDATE, DELETE, TRUNCATE; MySQL: INSERT, UPDATE, DELETE,
 * DROP, which TRUNCATE needs) and granted back when the run ends, on success and on failure. Each role's privileges are
 * recorded first, so a role that had only INSERT gets only INSERT back (a grant option included). Only privileges
 * granted on the table itself are revoked: a role that can still write through a schema- or database-wide grant, a
 * role it is a member of, ownership or superuser is refused at freeze time, naming the role, and its grants are put back.
 * The connection's own user must be able to revoke and grant them back: in PostgreSQL the table's owner (or a
 * superuser); in MySQL a user with GRANT OPTION on the table who can read mysql.user and the grant tables.
 *
 * `lock` is refused: a table lock lives as long as the session that took it, and each state of the rollback is a
 * separate Lambda call with its own connection, so no lock can be held from one stage's restore to its check. Revoking
 * the grants is what survives between the calls.
 */
export const tableFreezeSchema = z
  .strictObject({
    revokeFrom: z
      .array(z.string().min(1).max(200).regex(/^[^\s'"`;]+$/, 'must be a role name (no spaces, quotes or ";")'))
      .min(1, 'must name at least one role whose writes are refused during the restore'),
    lock: z.unknown().optional(),
  })
  .superRefine((f, ctx) => {
    if (f.lock !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['lock'],
        message:
          'a table lock cannot be held across the rollback\'s stages (each is a separate call with its own connection): name the roles to refuse instead, freeze: { revokeFrom: [...] }',
      });
    }
  })
  .transform((f) => ({ revokeFrom: f.revokeFrom }));

export type TableFreeze = z.infer<typeof tableFreezeSchema>;

export const s3PrefixUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('s3-prefix'),
  bucket: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      'must be a valid S3 bucket name (3-63 characters: lowercase letters, digits, "." and "-", starting and ending with a letter or digit)',
    ),
  prefix: z.string().min(1, 'must not be empty (a rollback of a whole bucket is not a unit: name the prefix, e.g. "raw/orders/")'),
  /**
   * `versioned` (default): the bucket keeps versions; capture records version ids, nothing is copied.
   * `copy`: for a bucket without versioning; capture copies the prefix into the state bucket.
   */
  mode: z.enum(['versioned', 'copy']).default('versioned'),
  /**
   * How a rollback finds what the deploy changed. `listing` (default): it lists every version under the prefix.
   * `change-log`: between the snapshot and `etl-rollback complete`, the stack records every change to the prefix from
   * S3's events (EventBridge → SQS → "Record changes"); a rollback restores the logged keys first, without listing, then
   * runs the full listing check, which repairs anything the log missed and says how much that was. Versioned mode only.
   */
  capture: z.enum(['listing', 'change-log']).default('listing'),
  /**
   * Write freeze for the restore's duration: a bucket policy statement denies writes to `bucket/prefix*` for every
   * principal but the rollback's own role, from the start of the unit's stage until the run ends (success or failure).
   * The bucket's own policy is kept first and survives; only the statement the run added is removed.
   * See core/adapters/freeze/s3.ts.
   */
  freeze: z.boolean().optional(),
  /**
   * How a restore brings back restore-point versions that sit in an archive tier (S3 Glacier Flexible Retrieval, Glacier
   * Deep Archive, or the archive tiers of Intelligent-Tiering): RestoreObject with this retrieval `tier` (`Standard`
   * default; `Bulk` is slower and cheaper; `Expedited` is minutes, Flexible Retrieval only: Deep Archive and the
   * Intelligent-Tiering tiers use Standard instead), keeping the temporary copy `days` days (default 1: the restore copies
   * it as soon as it is there). Intelligent-Tiering ignores `days`: its objects move back to the Frequent Access tier.
   */
  archiveRetrieval: z
    .strictObject({
      tier: z.enum(['Standard', 'Bulk', 'Expedited']).default('Standard'),
      days: z.number().int().min(1, 'must be at least 1 day').max(30, 'at most 30 days: the temporary copy is only needed until the restore has copied it').default(1),
    })
    .optional(),
}).refine((u) => !(u.capture === 'change-log' && u.mode === 'copy'), {
  path: ['capture'],
  message: 'capture "change-log" needs mode "versioned": the log names object versions, which a bucket without versioning does not keep',
});

export const postgresTableUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('postgres-table'),
  /** A key of the manifest's `connections`, whose engine is postgres. */
  connection: z.string().min(1, 'must name one of the manifest\'s "connections"'),
  table: tableName,
  /**
   * Narrow the unit to part of the table: `partition` names one or more partitions of a declaratively partitioned
   * table ("events_2026_11" or a list); `where` is a SQL predicate over the table's columns
   * (`event_date >= '2026-11-01'`). Capture and restore touch only the rows in scope. At most one of the two.
   */
  partition: z.union([tableName, z.array(tableName).min(1)]).optional(),
  where: z
    .string()
    .min(1)
    .max(2000)
    .superRefine((w, ctx) => {
      const problem = predicateProblem(w);
      if (problem) ctx.addIssue({ code: 'custom', message: `must be one SQL predicate: ${problem}` });
    })
    .optional(),
  /** SQL assertions checked by the gate after the unit's stage: each query must return one row whose first column is true. */
  assertions: z.array(assertionSchema).optional(),
  /**
   * How the restore point is taken. `copy`: a shadow copy of the rows in scope (capture reads and writes the whole
   * scope; restore finds changed rows by transaction id). `copy-on-write`: nothing is copied; triggers keep each row's
   * pre-image the first time the deploy changes it (needs a primary key; not for partitioned tables). Absent:
   * `copy-on-write` for a table of at least 1 GiB (pg_total_relation_size) that it can protect, else `copy`. See
   * core/adapters/postgres/copy-on-write.ts.
   */
  capture: z.enum(['copy', 'copy-on-write']).optional(),
  /** Refuse the named roles' writes to the table while it is restored (see tableFreezeSchema). */
  freeze: tableFreezeSchema.optional(),
});

/**
 * Why a `where` predicate is not one SQL expression, or undefined. It is spliced into statements as `(<where>\n)`, so
 * it is read token by token (quoted strings and identifiers skipped, in PostgreSQL's and MySQL's quoting) and refused
 * when it holds a statement separator, a comment (which could hide the closing parenthesis), a parenthesis closed
 * that it did not open (which would end the scope's parenthesis and go on outside it), or one left open.
 */
export function predicateProblem(where: string): string | undefined {
  let depth = 0;
  for (let i = 0; i < where.length; i++) {
    const c = where[i]!;
    if (c === "'" || c === '"' || c === '`') {
      // A quoted string or identifier; a doubled quote is an escaped one (and a backslash escapes in MySQL strings).
      let j = i + 1;
      for (; j < where.length; j++) {
        if (where[j] === '\\' && c === "'") j++;
        else if (where[j] === c) {
          if (where[j + 1] === c) j++;
          else break;
        }
      }
      if (j >= where.length) return `a ${c === "'" ? 'string' : 'quoted name'} opened at character ${i + 1} is not closed`;
      i = j;
      continue;
    }
    if (c === ';') return `";" at character ${i + 1} (one predicate, not statements)`;
    // '#' starts a comment in MySQL (in PostgreSQL it is XOR, which a scope predicate can do without).
    if ((c === '-' && where[i + 1] === '-') || (c === '/' && where[i + 1] === '*') || (c === '*' && where[i + 1] === '/') || c === '#') {
      return `a comment at character ${i + 1}`;
    }
    if (c === '(') depth++;
    if (c === ')' && --depth < 0) return `")" at character ${i + 1} closes a parenthesis the predicate did not open`;
  }
  return depth > 0 ? `${depth} parenthesis(es) left open` : undefined;
}

/** A MySQL partition name (a plain identifier, at most 64 characters). */
const mysqlPartitionName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_$]{0,63}$/, 'must be a partition name (letters, digits, "_", "$"; not starting with a digit; at most 64 characters)');

export const mysqlTableUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('mysql-table'),
  /** A key of the manifest's `connections`, whose engine is mysql (MySQL or MariaDB, InnoDB tables). */
  connection: z.string().min(1, 'must name one of the manifest\'s "connections"'),
  /** `table` (in the connection's database) or `database.table`. */
  table: tableName,
  /**
   * Narrow the unit to part of the table: `partition` names one or more of its MySQL partitions (or subpartitions);
   * `where` is a SQL predicate over the table's columns, evaluated with time_zone '+00:00'. Given both, the scope is the
   * rows of those partitions that match the predicate. Capture and restore touch only the rows in scope.
   */
  partition: z.union([mysqlPartitionName, z.array(mysqlPartitionName).min(1)]).optional(),
  where: z
    .string()
    .min(1)
    .max(2000)
    .superRefine((w, ctx) => {
      const problem = predicateProblem(w);
      if (problem) ctx.addIssue({ code: 'custom', message: `must be one SQL predicate: ${problem}` });
    })
    .optional(),
  /** SQL assertions checked by the gate after the unit's stage: each query must return one row whose first column is true. */
  assertions: z.array(assertionSchema).optional(),
  /**
   * How the restore point is taken (absent means `copy`, at any size: a MySQL copy-on-write seal reads the whole
   * table under shared locks, as the copy does, so it would save only the copy's writes). `copy`: a shadow copy of the rows in scope. `copy-on-write`: nothing is copied; row
   * triggers keep each row's pre-image the first time the deploy changes it, and a guard foreign key makes TRUNCATE
   * fail (needs a primary key; not for partitioned tables). See core/adapters/mysql/copy-on-write.ts.
   */
  capture: z.enum(['copy', 'copy-on-write']).optional(),
  /** Refuse the named roles' writes to the table while it is restored (see tableFreezeSchema). */
  freeze: tableFreezeSchema.optional(),
});

/** An RDS DB instance or cluster identifier: 1-63 letters, digits or hyphens, a letter first, no "--", no hyphen last. */

/** An RDS DB instance: restored from a snapshot taken before the deploy, then swapped in under the same identifier. */
export const rdsInstanceUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('rds-instance'),
  instanceId: rdsIdentifier,
});

/** An Aurora DB cluster: restored from a cluster snapshot (with a writer instance), then swapped in under the same identifier. */
export const rdsClusterUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('rds-cluster'),
  clusterId: rdsIdentifier,
});

/**
 * A Glue Data Catalog database or table name: 1-255 characters, no control characters, no "/" (it separates ARN parts),
 * no "*" or "?", and in lowercase, as the Data Catalog keeps it (the IAM grants and the restore point name it so).
 */
const glueName = z
  .string()
  .min(1)
  .max(255)
  .refine(
    (name) => ![...name].some((c) => c.charCodeAt(0) < 0x20 || c === '/' || c === '*' || c === '?'),
    'must be a Glue Data Catalog name: 1-255 characters, without control characters, "/", "*" or "?"',
  )
  .refine((name) => name === name.toLowerCase(), 'must be in lowercase, as the Glue Data Catalog keeps names');

/**
 * A Glue Data Catalog table: its definition (columns, partition keys, storage descriptor, parameters) and its partitions,
 * or only the partitions that `partitions` (a GetPartitions filter expression over the partition keys) selects.
 * Usually paired with the `s3-prefix` unit of the data under it (`dependsOn`), so a reader sees restored data through a
 * restored schema.
 */
export const glueTableUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('glue-table'),
  database: glueName,
  table: glueName,
  /** GetPartitions `Expression`, e.g. `dt >= '2026-11-01'`: capture and restore touch only the partitions it selects. */
  partitions: z.string().min(1).max(2048).optional(),
  /** The Data Catalog's account id; absent: the caller's account. */
  catalogId: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account id').optional(),
});

/** A Lambda function ARN, unqualified or with a version or alias; no wildcards (the IAM grant names it exactly). */
export const LAMBDA_FUNCTION_ARN = /^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$/;

/**
 * Where a `custom` unit's handler runs. Exactly one of: `lambdaArn`, a Lambda function (AWS, and local runs against
 * AWS); `module`, a TypeScript/JavaScript file relative to the manifest file and its `export` (default `handler`), run
 * in the CLI's process by `--local` runs. One object rather than a union, so a mistake gets one precise message.
 */
export const customHandlerSchema = z
  .strictObject({
    lambdaArn: z.string().regex(LAMBDA_FUNCTION_ARN, 'must be a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>[:<version or alias>])').optional(),
    module: z
      .string()
      .max(1024)
      .regex(/^\.{1,2}\/[^\0]*[^/]$/, 'must be a file path relative to the manifest file, starting with "./" or "../" (e.g. "./compensations/republish.ts")')
      .optional(),
    export: z.string().regex(/^[A-Za-z_$][A-Za-z0-9_$]{0,127}$/, 'must be the name of an exported function').optional(),
  })
  .superRefine((h, ctx) => {
    if (h.lambdaArn !== undefined && h.module !== undefined) ctx.addIssue({ code: 'custom', path: ['module'], message: 'give either "lambdaArn" or "module", not both' });
    else if (h.lambdaArn === undefined && h.module === undefined) ctx.addIssue({ code: 'custom', path: [], message: 'needs "lambdaArn" (a Lambda function) or "module" (a file run by --local runs)' });
    if (h.export !== undefined && h.module === undefined) ctx.addIssue({ code: 'custom', path: ['export'], message: '"export" goes with "module" only (a Lambda function has one handler)' });
  })
  .transform((h): { lambdaArn: string } | { module: string; export: string } =>
    h.lambdaArn !== undefined ? { lambdaArn: h.lambdaArn } : { module: h.module!, export: h.export ?? 'handler' },
  );

/**
 * A change no adapter can undo (messages already published, an API already called, an external system loaded), undone
 * by a compensating action: a handler the manifest names, called with `capture`, `restore` and `verify` (the contract
 * is in core/adapters/custom.ts). The handler's restore point is kept in the ledger and handed back to it.
 */
export const customUnitSchema = z.strictObject({
  ...unitBase,
  type: z.literal('custom'),
  handler: customHandlerSchema,
  /** How long one call of the handler may take (default 300 s; see core/adapters/custom.ts for the limit in AWS). */
  timeoutSeconds: z.number().int().min(1).max(900).default(300),
});

export const unitSchema = z.discriminatedUnion('type', [s3PrefixUnitSchema, postgresTableUnitSchema, mysqlTableUnitSchema, rdsInstanceUnitSchema, rdsClusterUnitSchema, glueTableUnitSchema, customUnitSchema]);

/** Each unit type's schema, by its `type` value: the list of types a message can offer, and each type's fields. */
export const unitSchemasByType = {
  's3-prefix': s3PrefixUnitSchema,
  'postgres-table': postgresTableUnitSchema,
  'mysql-table': mysqlTableUnitSchema,
  'rds-instance': rdsInstanceUnitSchema,
  'rds-cluster': rdsClusterUnitSchema,
  'glue-table': glueTableUnitSchema,
  custom: customUnitSchema,
} as const satisfies Record<z.infer<typeof unitSchema>['type'], z.ZodObject>;

export const manifestSchema = z.strictObject({
  pipeline: identifier,
  description: z.string().optional(),
  connections: z
    .record(
      z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'connection names must start with a lowercase letter and hold only a-z, 0-9, "_" or "-"'),
      connectionSchema,
    )
    .default({}),
  units: z.array(unitSchema).min(1, 'a manifest needs at least one unit'),
  /** How long restore points are kept (and must stay restorable: an S3 lifecycle may not expire them sooner). */
  retention: z.strictObject({ days: z.number().int().min(1).max(3650).default(14) }).prefault({}),
  /** When a rollback may run, who must approve it, which pipeline triggers pause meanwhile (core/manifest/policy.ts). */
  policy: policySchema.optional(),
  /** Recovery-time objective: a rollback drill slower than this fails (`90s`, `15m`, `1h`; core/manifest/drill.ts). */
  rto: durationSchema.optional(),
  /** A scheduled rollback drill into scratch targets (core/manifest/drill.ts, core/workflow/drill.ts). */
  drill: drillSchema.optional(),
  /** Start the pipeline's own ETL state machine once every stage is restored and verified (core/manifest/replay.ts). */
  replay: replaySchema.optional(),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type Unit = z.infer<typeof unitSchema>;
export type UnitType = Unit['type'];
export type S3PrefixUnit = z.infer<typeof s3PrefixUnitSchema>;
export type PostgresTableUnit = z.infer<typeof postgresTableUnitSchema>;
export type MysqlTableUnit = z.infer<typeof mysqlTableUnitSchema>;
export type RdsInstanceUnit = z.infer<typeof rdsInstanceUnitSchema>;
export type RdsClusterUnit = z.infer<typeof rdsClusterUnitSchema>;
export type GlueTableUnit = z.infer<typeof glueTableUnitSchema>;
export type CustomUnit = z.infer<typeof customUnitSchema>;
export type CustomHandlerRef = CustomUnit['handler'];
export type Connection = z.infer<typeof connectionSchema>;
