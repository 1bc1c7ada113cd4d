import { createHash } from 'node:crypto';

/**
 * Pieces of the names etl-rollback gives its own tables (shadow copies, quarantines, undo tables) in PostgreSQL and
 * MySQL: a readable part for people and a hash for uniqueness, so a retried step finds the table it made.
 */

/** `text` folded to lowercase `[a-z0-9_]`, at most `max` characters, never empty. */
export function readablePart(text: string, max: number): string {
  const cleaned = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, max)
    .replace(/_+$/, '');
  return cleaned || 'x';
}

/** 16 hex characters of SHA-256 over the parts (NUL-separated, so ("a-b","c") and ("a","b-c") differ). */
export function nameHash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 16);
}
