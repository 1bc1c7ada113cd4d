import { tableNameParts } from '../../manifest/schema.ts';

/**
 * Points a unit's user check (a read-only SQL assertion written against the production table) at the drill's scratch
 * copy, by rewriting the table after FROM / JOIN. Conservative on purpose: a check is only rewritten when every relation
 * it reads is the unit's table; otherwise the drill reports why it did not run it, and never runs it on production
 * (it would pass or fail on data the drill did not restore).
 */
export type PointedCheck = { sql: string } | { reason: string };

const PLAIN = /^[A-Za-z_][A-Za-z0-9_$]*$/;
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A pattern for one name part: quoted as the engine quotes, or (a plain identifier) unquoted; matched ignoring case. */
function partPattern(part: string, quote: '"' | '`'): string {
  const quoted = `${escapeRe(quote)}${escapeRe(part.replaceAll(quote, quote + quote))}${escapeRe(quote)}`;
  return PLAIN.test(part) ? `(?:${quoted}|${escapeRe(part)})` : quoted;
}

const NAME_END = '(?![A-Za-z0-9_$"`.])';

/**
 * `sql` with the unit's `table` (as the manifest writes it) replaced by `scratchSql` wherever it is read (FROM / JOIN),
 * or why it cannot be. `defaultSchema` is what an unqualified table name resolves to (PostgreSQL `public`; MySQL the
 * connection's database), so `public.orders` in a check of unit table `orders` is recognised too.
 */
export function pointCheckAt(sql: string, table: string, scratchSql: string, quote: '"' | '`', defaultSchema?: string): PointedCheck {
  const parts = tableNameParts(table);
  const last = partPattern(parts[parts.length - 1]!, quote);
  const schema = parts.length === 2 ? partPattern(parts[0]!, quote) : defaultSchema ? partPattern(defaultSchema, quote) : undefined;
  const ref = parts.length === 2 ? `${schema}\\s*\\.\\s*${last}` : schema ? `(?:${schema}\\s*\\.\\s*)?${last}` : last;
  const reads = new RegExp(`\\b(FROM|JOIN)(\\s+)(ONLY\\s+)?${ref}${NAME_END}`, 'gi');
  let rewrites = 0;
  const rewritten = sql.replace(reads, (_m, kw: string, space: string, only: string | undefined) => {
    rewrites += 1;
    return `${kw}${space}${only ?? ''}${scratchSql}`;
  });
  if (rewrites === 0) return { reason: `it does not read ${table} (FROM or JOIN), so it cannot be pointed at the scratch copy` };
  // The table named anywhere else (a qualified column `staging.orders.id`, a subquery in another form) is left unrewritten.
  const elsewhere = new RegExp(`(?<![A-Za-z0-9_$"\`.])${parts.length === 2 ? ref : `${last}\\s*\\.`}`, 'i');
  if (elsewhere.test(rewritten.replaceAll(scratchSql, ''))) {
    return { reason: `it names ${table} outside FROM/JOIN (a qualified column?); use an alias so the drill can point it at the scratch copy` };
  }
  const others = [...rewritten.matchAll(/\b(?:FROM|JOIN)\s+(?:ONLY\s+)?([^\s,()]+)/gi)]
    .map((m) => m[1]!)
    .filter((name) => !name.startsWith(scratchSql.split('.')[0]!) && !/^(LATERAL|SELECT)$/i.test(name));
  if (others.length > 0) return { reason: `it also reads ${[...new Set(others)].join(', ')}, which the drill does not copy` };
  if (new RegExp(`\\b(?:FROM|JOIN)\\s+(?:ONLY\\s+)?${escapeRe(scratchSql)}(?:\\s+(?:AS\\s+)?[A-Za-z_][A-Za-z0-9_]*)?\\s*,`, 'i').test(rewritten)) {
    return { reason: 'it joins other relations with a comma, which the drill does not copy' };
  }
  return { sql: rewritten };
}
