/**
 * The deploys of the unique-key tests (test/adapters/unique-moves.test.ts), as statements run one at a time. A table of
 * 40 rows (`id` the key, `v` = 'v' || id under a unique constraint) is changed so that values of `v` move between rows.
 */
export const uniqueMoves = {
  /** The table, for PostgreSQL or MySQL. */
  create: (table: string, engine: 'postgres' | 'mysql'): string[] =>
    engine === 'postgres'
      ? [`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL UNIQUE)`, `INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 40) g`]
      : [`CREATE TABLE ${table} (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL, UNIQUE KEY uv (v)) ENGINE=InnoDB`, `INSERT INTO ${table} SELECT seq, CONCAT('v', seq) FROM seq_1_to_40`],
  /**
   * Chains (5 rows to overwrite): row 24 moves to key 30 (deleted first) and a new row takes key 24, so the lower
   * key's pre-image holds a value a higher key holds now; row 12's value goes to row 13, whose own goes to row 14.
   * Some order of updates puts them back.
   */
  chains: (table: string): string[] => [
    `DELETE FROM ${table} WHERE id = 30`,
    `UPDATE ${table} SET id = 30 WHERE id = 24`,
    `INSERT INTO ${table} VALUES (24, 'new')`,
    `UPDATE ${table} SET v = 'x12' WHERE id = 12`,
    `UPDATE ${table} SET v = 'v12' WHERE id = 13`,
    `UPDATE ${table} SET v = 'v13' WHERE id = 14`,
  ],
  /** A swap: rows 5 and 6 trade values (through a third). Every order of updates collides. */
  swap: (table: string): string[] => [`UPDATE ${table} SET v = 'tmp' WHERE id = 5`, `UPDATE ${table} SET v = 'v5' WHERE id = 6`, `UPDATE ${table} SET v = 'v6' WHERE id = 5`],
};

