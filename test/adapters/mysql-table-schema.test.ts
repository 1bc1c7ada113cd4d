import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mysql from 'mysql2/promise';
import { mysqlTable as adapter, schemaQuarantineTableName, type MysqlTableDetails } from '../../core/adapters/mysql-table.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { PreflightError } from '../../core/errors.ts';
import type { MysqlTableUnit } from '../../core/manifest/schema.ts';
import { mysqlConnector, type MysqlConnector } from '../../core/runtime/connections.ts';
import { createTableReader, createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlUnit } from '../support/mysql-adapter.ts';

/** Schema restore: the deploy altered the table's columns; restore puts back the captured definition, then the rows. */

let db: TestMysqlDatabase;
let sql: mysql.Connection;
let connector: MysqlConnector;
const PIPELINE = 'shop-schema';

beforeAll(async () => {
  db = await createTestMysqlDatabase('myschema');
  sql = await db.connection();
  connector = mysqlConnector({ warehouse: { engine: 'mysql', url: db.url } });
});

afterAll(async () => {
  await db?.drop();
});

const unit = mysqlUnit;

function ctx(deploymentId: string, runId = `run-${deploymentId}`): AdapterContext {
  return mysqlAdapterContext({ pipeline: PIPELINE, deploymentId, runId, mysql: connector });
}

async function q<T = mysql.RowDataPacket>(text: string, values?: unknown[]): Promise<T[]> {
  const [rows] = await sql.query(text, values);
  return rows as T[];
}

/** Rows as text (every column, table order), sorted. */
async function rowsOf(table: string): Promise<string[]> {
  const [schema, name] = table.includes('.') ? table.split('.') : [db.name, table];
  const cols = await q<{ c: string }>('SELECT COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION', [schema, name]);
  const rows = await q<{ r: string }>(`SELECT CONCAT_WS(',', ${cols.map(({ c }) => `QUOTE(\`${c}\`)`).join(', ')}) AS r FROM \`${schema}\`.\`${name}\` ORDER BY CAST(r AS BINARY)`);
  return rows.map((r) => r.r);
}

/** SHOW CREATE TABLE without the AUTO_INCREMENT counter. */
async function definitionOf(table: string): Promise<string> {
  const [row] = await q<Record<string, string>>(`SHOW CREATE TABLE \`${table}\``);
  return row!['Create Table']!.replace(/ AUTO_INCREMENT=\d+/, '');
}

async function checksOk(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext): Promise<boolean> {
  const checks = await adapter.verify(u, point, c);
  return checks.length > 0 && checks.every((ch) => ch.ok);
}

const schemaQuarantine = (unitId: string, c: AdapterContext): string => `etl_rollback.${schemaQuarantineTableName(PIPELINE, c.runId!, unitId)}`;

async function exists(qualified: string): Promise<boolean> {
  const [schema, name] = qualified.split('.');
  return (await q('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [schema, name])).length > 0;
}

/** A table with a view over it and a foreign key into it; returns a check that both still work. */
async function tableWithDependents(name: string): Promise<() => Promise<void>> {
  await sql.query(
    `CREATE TABLE ${name} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL DEFAULT 'anon', qty INT DEFAULT 0, note TEXT, total INT GENERATED ALWAYS AS (qty * 2) VIRTUAL, KEY idx_note (note(8)), UNIQUE KEY uq_name_qty (name, qty))`,
  );
  await sql.query(`CREATE TABLE ${name}_child (id INT PRIMARY KEY, parent_id INT NOT NULL, FOREIGN KEY (parent_id) REFERENCES ${name} (id))`);
  await sql.query(`CREATE VIEW ${name}_v AS SELECT id, UPPER(name) AS name FROM ${name}`);
  await sql.query(`INSERT INTO ${name} (id, name, qty, note) SELECT seq, CONCAT('n', seq), seq, IF(seq % 3 = 0, NULL, CONCAT('note ', seq)) FROM seq_1_to_20`);
  await sql.query(`INSERT INTO ${name}_child SELECT seq, seq FROM seq_1_to_5`);
  const reader = await createTableReader(db.name, name);
  return async () => {
    // The grant on the table still holds (the same table, altered back and written in place).
    const [all] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${name}`);
    expect(await reader.count()).toBe(Number(all!.n));
    await reader.drop();
    const viewRows = await q<{ name: string }>(`SELECT name FROM ${name}_v WHERE id IN (1, 20) ORDER BY id`);
    expect(viewRows.map((r) => r.name)).toEqual(['N1', 'N20']);
    const [joined] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${name}_child c JOIN ${name} p ON p.id = c.parent_id`);
    expect(String(joined!.n)).toBe('5');
    await expect(sql.query(`INSERT INTO ${name}_child VALUES (100, 999)`)).rejects.toThrow(/foreign key constraint fails/);
    await sql.query(`INSERT INTO ${name}_child VALUES (100, 20)`);
    await sql.query(`DELETE FROM ${name}_child WHERE id = 100`);
  };
}

/** Restores, then checks rows, definition, dependents, verification and a second restore writing nothing. */
async function restoreAndCheck(
  u: MysqlTableUnit,
  point: RestorePoint<MysqlTableDetails>,
  c: AdapterContext,
  table: string,
  captured: { rows: string[]; definition: string },
  dependents?: () => Promise<void>,
) {
  const dry = await adapter.diff(u, point, c);
  expect(dry.notes[0]).toMatch(/^capture: copy \(the default; the unit does not set capture\): shadow copy etl_rollback\.rp_/);
  expect(dry.notes[1]).toMatch(/^schema will be restored: /);
  const outcome = await adapter.restore(u, point, c);
  expect(outcome.notes[0]).toMatch(/^schema restored: /);
  expect(outcome.notes[0]).toContain(schemaQuarantine(u.id, c));
  expect(await rowsOf(table)).toEqual(captured.rows);
  expect(await definitionOf(table)).toEqual(captured.definition);
  if (dependents) await dependents();
  expect(await checksOk(u, point, c)).toBe(true);
  const again = await adapter.restore(u, point, c);
  expect(again.writes).toBe(0);
  expect(again.notes.some((n) => n.startsWith('schema'))).toBe(false);
  expect((await adapter.diff(u, point, c)).writes).toBe(0);
  return outcome;
}

describe('mysql-table schema restore', () => {
  it('drops a column the deploy added, keeping its values in the schema quarantine', async () => {
    const dependents = await tableWithDependents('s_added');
    const u = unit('s-added', 's_added');
    const c = ctx('d-s-added');
    const point = await adapter.capture(u, c);
    expect(point.details.columns[1]).toMatchObject({ name: 'name', nullable: false, default: "'anon'", definition: expect.stringContaining("NOT NULL DEFAULT 'anon'") });
    const captured = { rows: await rowsOf('s_added'), definition: await definitionOf('s_added') };

    await sql.query(`ALTER TABLE s_added ADD COLUMN tier VARCHAR(10) NOT NULL DEFAULT 'gold' AFTER id, ADD INDEX (tier)`);
    await sql.query(`UPDATE s_added SET tier = 'silver', qty = qty + 100 WHERE id IN (2, 4)`);
    await sql.query(`INSERT INTO s_added (id, tier, name) VALUES (21, 'bronze', 'new')`);
    await sql.query('DELETE FROM s_added WHERE id = 19');

    const outcome = await restoreAndCheck(u, point, c, 's_added', captured, dependents);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 2, rowsDeleted: 1 });
    const kept = await q<{ id: number; tier: string }>(`SELECT id, tier FROM ${schemaQuarantine(u.id, c)} WHERE id IN (2, 21) ORDER BY id`);
    expect(kept.map((r) => `${r.id}:${r.tier}`)).toEqual(['2:silver', '21:bronze']);
    const [count] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${schemaQuarantine(u.id, c)}`);
    expect(String(count!.n)).toBe('20');
  });

  it('re-adds a column the deploy dropped, in its place, with the captured values', async () => {
    const dependents = await tableWithDependents('s_dropped');
    const u = unit('s-dropped', 's_dropped');
    const c = ctx('d-s-dropped');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_dropped'), definition: await definitionOf('s_dropped') };

    await sql.query('ALTER TABLE s_dropped DROP COLUMN note');
    await sql.query(`UPDATE s_dropped SET name = 'changed' WHERE id = 7`);
    expect(await definitionOf('s_dropped')).not.toContain('idx_note');

    await restoreAndCheck(u, point, c, 's_dropped', captured, dependents);
  });

  it('retypes a column back (INT to VARCHAR by the deploy, back to INT), and a VARCHAR retyped to INT back to VARCHAR', async () => {
    const dependents = await tableWithDependents('s_retyped');
    await sql.query(`ALTER TABLE s_retyped ADD COLUMN code VARCHAR(12) COLLATE utf8mb4_bin NULL`);
    await sql.query(`UPDATE s_retyped SET code = CAST(id * 10 AS CHAR)`);
    const u = unit('s-retyped', 's_retyped');
    const c = ctx('d-s-retyped');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_retyped'), definition: await definitionOf('s_retyped') };

    await sql.query('ALTER TABLE s_retyped MODIFY qty VARCHAR(30) NULL, MODIFY code BIGINT NULL');
    await sql.query(`UPDATE s_retyped SET qty = '77', code = 5 WHERE id = 3`);

    await restoreAndCheck(u, point, c, 's_retyped', captured, dependents);
  });

  it('refuses, naming the quarantine, a retype some live value cannot take; the table is unchanged, and a rerun converges after the fix', async () => {
    await sql.query('CREATE TABLE s_badcast (id INT PRIMARY KEY, qty INT NOT NULL)');
    await sql.query('INSERT INTO s_badcast SELECT seq, seq FROM seq_1_to_10');
    const u = unit('s-badcast', 's_badcast');
    const c = ctx('d-s-badcast');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_badcast'), definition: await definitionOf('s_badcast') };
    await sql.query('ALTER TABLE s_badcast MODIFY qty VARCHAR(10) NOT NULL');
    await sql.query(`UPDATE s_badcast SET qty = 'lots' WHERE id = 4`);
    const deployed = { rows: await rowsOf('s_badcast'), definition: await definitionOf('s_badcast') };

    const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toContain(schemaQuarantine(u.id, c));
    expect((error as Error).message).toMatch(/ALTER TABLE is atomic/);
    expect(await rowsOf('s_badcast')).toEqual(deployed.rows);
    expect(await definitionOf('s_badcast')).toEqual(deployed.definition);
    const [n1] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${schemaQuarantine(u.id, c)}`);
    expect(String(n1!.n)).toBe('10');

    await sql.query(`UPDATE s_badcast SET qty = '40' WHERE id = 4`);
    await restoreAndCheck(u, point, c, 's_badcast', captured);
    // Topped up, not refilled: the ten rows kept first, plus the one row changed since.
    const kept = await q<{ qty: string }>(`SELECT qty FROM ${schemaQuarantine(u.id, c)} WHERE id = 4 ORDER BY qty`);
    expect(kept.map((r) => r.qty)).toEqual(['40', 'lots']);
  });

  it('puts back a changed default, NOT NULL, a generated expression, a collation and the column order', async () => {
    const dependents = await tableWithDependents('s_attrs');
    const u = unit('s-attrs', 's_attrs');
    const c = ctx('d-s-attrs');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_attrs'), definition: await definitionOf('s_attrs') };

    await sql.query(
      `ALTER TABLE s_attrs MODIFY name VARCHAR(20) COLLATE utf8mb4_bin NULL DEFAULT 'someone', ALTER qty SET DEFAULT 5,
         MODIFY qty INT NOT NULL DEFAULT 5 AFTER note, MODIFY total INT GENERATED ALWAYS AS (qty * 3) VIRTUAL,
         ADD INDEX idx_deploy (qty), DROP INDEX uq_name_qty, ADD UNIQUE KEY uq_name_qty (qty, name)`,
    );
    await sql.query('INSERT INTO s_attrs (id, qty) VALUES (30, 1)');

    await restoreAndCheck(u, point, c, 's_attrs', captured, dependents);
    await sql.query('INSERT INTO s_attrs (id) VALUES (40)');
    expect(await rowsOf('s_attrs')).toContain(`'40','anon','0',NULL,'0'`);
    await expect(sql.query('INSERT INTO s_attrs (id, name) VALUES (41, NULL)')).rejects.toThrow(/cannot be null/);
    await sql.query('DELETE FROM s_attrs WHERE id = 40');
  });

  it('converges on a rerun after a crash between the ALTER and the row restore', async () => {
    const dependents = await tableWithDependents('s_crash');
    const u = unit('s-crash', 's_crash');
    const c = ctx('d-s-crash');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_crash'), definition: await definitionOf('s_crash') };
    await sql.query('ALTER TABLE s_crash ADD COLUMN extra INT NULL, DROP COLUMN note');
    await sql.query('UPDATE s_crash SET extra = id, name = UPPER(name) WHERE id <= 3');

    // The row transaction fails while the flag is set (the flag is cleared outside it: "once").
    await sql.query('CREATE TABLE s_crash_flag (armed INT NOT NULL)');
    await sql.query('INSERT INTO s_crash_flag VALUES (1)');
    await sql.query(
      `CREATE TRIGGER s_crash_fail BEFORE UPDATE ON s_crash FOR EACH ROW
         IF (SELECT armed FROM s_crash_flag) = 1 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected crash'; END IF`,
    );
    const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/injected crash/);
    expect((error as Error).message).toMatch(/schema restored/);
    // DDL done, rows not yet.
    expect(await definitionOf('s_crash')).toEqual(captured.definition);
    expect(await rowsOf('s_crash')).not.toEqual(captured.rows);
    const [n1] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${schemaQuarantine(u.id, c)}`);
    expect(String(n1!.n)).toBe('20');

    await sql.query('UPDATE s_crash_flag SET armed = 0');
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.notes.some((n) => n.startsWith('schema'))).toBe(false); // no DDL on the rerun
    // The re-added `note` is NULL until the rows come back: the 14 rows with a note, and row 3 (renamed, no note).
    expect(outcome.changes.rowsUpdated).toBe(15);
    expect(await rowsOf('s_crash')).toEqual(captured.rows);
    const [n2] = await q<{ n: string }>(`SELECT COUNT(*) AS n FROM ${schemaQuarantine(u.id, c)}`);
    expect(String(n2!.n)).toBe('20');
    await dependents();
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });

  it('undoes a column rename as drop plus re-add: the renamed values kept in quarantine, the captured ones back', async () => {
    const dependents = await tableWithDependents('s_renamed');
    const u = unit('s-renamed', 's_renamed');
    const c = ctx('d-s-renamed');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_renamed'), definition: await definitionOf('s_renamed') };
    await sql.query('ALTER TABLE s_renamed RENAME COLUMN note TO remark');
    await sql.query(`UPDATE s_renamed SET remark = 'edited' WHERE id = 1`);
    await restoreAndCheck(u, point, c, 's_renamed', captured, dependents);
    const kept = await q<{ remark: string }>(`SELECT remark FROM ${schemaQuarantine(u.id, c)} WHERE id = 1`);
    expect(kept.map((r) => r.remark)).toEqual(['edited']);
  });

  it('restores a table without a primary key whose schema changed', async () => {
    await sql.query('CREATE TABLE s_nopk (a INT, b VARCHAR(10))');
    await sql.query(`INSERT INTO s_nopk VALUES (1, 'x'), (1, 'x'), (2, NULL)`);
    const u = unit('s-nopk', 's_nopk');
    const c = ctx('d-s-nopk');
    const point = await adapter.capture(u, c);
    const captured = { rows: await rowsOf('s_nopk'), definition: await definitionOf('s_nopk') };
    await sql.query('ALTER TABLE s_nopk ADD COLUMN c INT, MODIFY b VARCHAR(20)');
    await sql.query(`INSERT INTO s_nopk VALUES (3, 'y', 9)`);
    await restoreAndCheck(u, point, c, 's_nopk', captured);
  });
});

describe('mysql-table schema restore: refusals, before anything is written', () => {
  async function expectRefused(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext, table: string, pattern: RegExp) {
    const before = { rows: await rowsOf(table), definition: await definitionOf(table) };
    for (const op of [() => adapter.restore(u, point, c), () => adapter.diff(u, point, c)]) {
      const error = await op().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PreflightError);
      expect((error as Error).message).toMatch(pattern);
      expect((error as Error).message).toContain('Nothing was written');
    }
    expect(await rowsOf(table)).toEqual(before.rows);
    expect(await definitionOf(table)).toEqual(before.definition);
    expect(await exists(schemaQuarantine(u.id, c))).toBe(false);
  }

  it('a primary key change', async () => {
    await sql.query('CREATE TABLE r_pk (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO r_pk VALUES (1, 1), (2, 2)');
    const u = unit('r-pk', 'r_pk');
    const point = await adapter.capture(u, ctx('d-r-pk'));
    await sql.query('ALTER TABLE r_pk ADD COLUMN w INT, DROP PRIMARY KEY, ADD PRIMARY KEY (id, v)');
    await expectRefused(u, point, ctx('d-r-pk'), 'r_pk', /primary key changed from \(id\) to \(id, v\)/);
  });

  it('schema drift under a where or partition scope', async () => {
    await sql.query('CREATE TABLE r_scoped (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO r_scoped SELECT seq, seq FROM seq_1_to_10');
    const u = unit('r-scoped', 'r_scoped', { where: 'id > 5' });
    const point = await adapter.capture(u, ctx('d-r-scoped'));
    await sql.query('ALTER TABLE r_scoped ADD COLUMN w INT');
    await expectRefused(u, point, ctx('d-r-scoped'), 'r_scoped', /column "w" \(int\(11\)\) was added\), and this unit is scoped \(where id > 5\)/);
  });

  it('(not refused) a scoped unit whose columns only changed default or order: rows restored, definition left, noted', async () => {
    await sql.query('CREATE TABLE r_scoped_attr (id INT PRIMARY KEY, v INT DEFAULT 1, w INT)');
    await sql.query('INSERT INTO r_scoped_attr SELECT seq, seq, seq FROM seq_1_to_10');
    const u = unit('r-scoped-attr', 'r_scoped_attr', { where: 'id > 5' });
    const c = ctx('d-r-scoped-attr');
    const point = await adapter.capture(u, c);
    await sql.query('ALTER TABLE r_scoped_attr ALTER v SET DEFAULT 2, MODIFY w INT AFTER id');
    await sql.query('UPDATE r_scoped_attr SET v = 0');
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 5, rowsDeleted: 0 });
    expect(outcome.notes[0]).toMatch(/^schema not restored for a scoped unit \(where id > 5\): column "v" changed from int\(11\) DEFAULT 1 to int\(11\) DEFAULT 2/);
    expect(await definitionOf('r_scoped_attr')).toContain('DEFAULT 2');
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('a column to drop that a view or a generated column uses', async () => {
    await sql.query('CREATE TABLE r_view (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO r_view VALUES (1, 1)');
    const u = unit('r-view', 'r_view');
    const point = await adapter.capture(u, ctx('d-r-view'));
    await sql.query('ALTER TABLE r_view ADD COLUMN w INT, ADD COLUMN g INT GENERATED ALWAYS AS (v + 1) VIRTUAL');
    await sql.query('CREATE VIEW r_view_w AS SELECT id, w FROM r_view');
    await expectRefused(u, point, ctx('d-r-view'), 'r_view', new RegExp(`column "w" must be dropped, but view\\(s\\) ${db.name}.r_view_w use it`));

    await sql.query('DROP VIEW r_view_w');
    await sql.query('ALTER TABLE r_view DROP COLUMN g, ADD COLUMN g2 INT GENERATED ALWAYS AS (w * 2) VIRTUAL');
    // g2 is dropped too (the deploy added it), so w may go: this one is allowed.
    await adapter.restore(u, point, ctx('d-r-view'));
    expect(await rowsOf('r_view')).toEqual(["'1','1'"]);
  });

  it('a foreign key on a column the restore would change', async () => {
    await sql.query('CREATE TABLE r_fk_parent (id INT PRIMARY KEY)');
    await sql.query('CREATE TABLE r_fk (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO r_fk VALUES (1, 1)');
    const u = unit('r-fk', 'r_fk');
    const point = await adapter.capture(u, ctx('d-r-fk'));
    await sql.query('ALTER TABLE r_fk ADD COLUMN parent_id INT NULL, ADD CONSTRAINT r_fk_to_parent FOREIGN KEY (parent_id) REFERENCES r_fk_parent (id)');
    await expectRefused(u, point, ctx('d-r-fk'), 'r_fk', /foreign key .*r_fk_to_parent uses column "parent_id"/);
  });

  it('a point captured before column definitions were recorded', async () => {
    await sql.query('CREATE TABLE r_old (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO r_old VALUES (1, 1)');
    const u = unit('r-old', 'r_old');
    const point = await adapter.capture(u, ctx('d-r-old'));
    const old: RestorePoint<MysqlTableDetails> = {
      ...point,
      details: { ...point.details, columns: point.details.columns.map(({ name, type, dataType, collation, generated }) => ({ name, type, dataType, collation, generated })) },
    };
    await sql.query('ALTER TABLE r_old ADD COLUMN w INT');
    await expectRefused(u, old, ctx('d-r-old'), 'r_old', /captured by an older etl-rollback that did not record column definitions/);
  });
});
