import { createHash } from 'node:crypto';

/** Pure helpers shared by both modes: key order, ETags, checksums, names, bounded concurrency. No I/O. */

/** `restore-points/<pipeline>/<deploymentId>/<unitId>/`, each segment URL-encoded (a no-op for plain ids). */
export function restorePointFolder(pipeline: string, deploymentId: string, unitId: string): string {
  return `restore-points/${[pipeline, deploymentId, unitId].map(encodeURIComponent).join('/')}/`;
}

/** `restore-points/<pipeline>/<deploymentId>/<unitId>/versions.json`. */
export function manifestKeyFor(pipeline: string, deploymentId: string, unitId: string): string {
  return `${restorePointFolder(pipeline, deploymentId, unitId)}versions.json`;
}

/** Where copy mode keeps its copy of `key`: `restore-points/<pipeline>/<deployment>/<unit>/objects/<key>`. */
export function backupKeyFor(folder: string, key: string): string {
  return `${folder}objects/${key}`;
}

/** Where a copy-mode restore keeps what it overwrites or deletes: `quarantine/<runId>/<unit>/<key>`. */
export function quarantineKeyFor(runId: string, unitId: string, key: string): string {
  return `quarantine/${encodeURIComponent(runId)}/${encodeURIComponent(unitId)}/${key}`;
}

/**
 * Orders keys the way S3 lists them: by Unicode code point (= UTF-8 byte order). JavaScript's default string order
 * compares UTF-16 code units, which differs for characters above U+FFFF against U+E000–U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Move surrogates (U+D800–U+DFFF) above U+E000–U+FFFF, keeping everything else in place.
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

/** ETags are listed in quotes (`"d41d8…"`); manifests keep them bare. */
export function normalizeEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^"+|"+$/g, '');
}

/** Escapes `\`, tab, newline and carriage return so that a key can never forge a field or a line of a checksum input. */
function checksumField(value: string): string {
  return value.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

function sha256OfLines(lines: string[]): string {
  const hash = createHash('sha256');
  for (const line of lines) hash.update(`${line}\n`);
  return hash.digest('hex');
}

/** The point's checksum (versioned mode): sha256 hex over `key\tversionId\tetag\tsize\n` lines in key order. */
export function manifestChecksum(entries: readonly { key: string; versionId: string; etag: string; size: number }[]): string {
  return sha256OfLines(
    [...entries]
      .sort((a, b) => compareKeys(a.key, b.key))
      .map((e) => `${checksumField(e.key)}\t${e.versionId}\t${e.etag}\t${e.size}`),
  );
}

/** The content checksum: sha256 hex over `key\tetag\tsize\n` lines in key order (version ids left out). */
export function contentChecksum(entries: readonly { key: string; etag: string; size: number }[]): string {
  return sha256OfLines(
    [...entries].sort((a, b) => compareKeys(a.key, b.key)).map((e) => `${checksumField(e.key)}\t${e.etag}\t${e.size}`),
  );
}

/**
 * CopySource for an object (or one version of it): `bucket/key[?versionId=…]`, the key URL-encoded segment by segment
 * (slashes kept), so keys with spaces, `+`, `%`, `#`, `?` or any Unicode arrive intact.
 */
export function copySourceOf(bucket: string, key: string, versionId?: string): string {
  const path = `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return versionId === undefined ? path : `${path}?versionId=${encodeURIComponent(versionId)}`;
}

/** Names the first `limit` items and how many there are in all: `a, b, c (and 17 more)`. */
export function nameSome(items: readonly string[], limit = 20): string {
  const shown = items.slice(0, limit).map((k) => JSON.stringify(k)).join(', ');
  return items.length > limit ? `${shown} (and ${items.length - limit} more)` : shown;
}

export function s3Url(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

/** Runs `fn` over `items`, at most `limit` at a time. Stops starting new work after the first failure and rethrows it. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  let firstError: unknown;
  async function worker(): Promise<void> {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index] as T);
      } catch (error) {
        if (!failed) firstError = error;
        failed = true;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  if (failed) throw firstError;
  return results;
}

/** Key of a HeadObject result in a map of heads: (key, version id). */
export const headKey = (key: string, versionId: string): string => `${key}\u0000${versionId}`;
