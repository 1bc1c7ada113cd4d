import { readFile } from 'node:fs/promises';
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type YAMLError } from 'yaml';
import type { z } from 'zod';
import { InputError, ManifestError, type ManifestIssue } from '../errors.ts';
import { dependencyGraph, findCycles, type GraphUnit } from './graph.ts';
import { checksFieldsSchema, connectionFieldsSchema, manifestSchema, unitSchemasByType, type Manifest } from './schema.ts';

/**
 * Reading a manifest: YAML → plain value → schema (zod) → whole-manifest checks (dependencies, connections).
 *
 * Every problem found is collected and thrown as one `ManifestError`, each issue with the path where it was found
 * (`units[2].dependsOn[0]`), what is wrong and what is known, and — when the YAML text is at hand — its line.
 * Schema and whole-manifest checks run side by side on the same value, so one run shows everything to fix.
 */

type PathSegment = string | number;

/** An issue before its path is formatted and its line added. */
interface RawIssue {
  path: PathSegment[];
  message: string;
}

/** Largest manifest file read: far above any real one (hundreds of units), far below what could exhaust memory. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/** Longest value a message echoes; longer ones are cut, with their length (a 5 MB value is not repeated to the user). */
const MAX_ECHO = 80;

/** Manifests are UTF-8 text: any other bytes are refused with where they are, instead of being read as replacement characters. */
function decodeUtf8(bytes: Uint8Array, path: string): string {
  const valid = (n: number, stream: boolean): boolean => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, n), { stream });
      return true;
    } catch {
      return false;
    }
  };
  if (valid(bytes.length, false)) return new TextDecoder('utf-8').decode(bytes);
  // The longest prefix that is valid so far (streaming: a sequence cut at the end is not yet an error), so the
  // search is monotonic; the byte right after it is the first that cannot be UTF-8.
  let lo = 0;
  let hi = bytes.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (valid(mid, true)) lo = mid;
    else hi = mid - 1;
  }
  // A sequence started before `lo` and left unfinished: the byte to name is the one that started it.
  let at = Math.min(lo, bytes.length - 1);
  if (!valid(lo, false)) {
    for (let k = lo - 1; k >= Math.max(0, lo - 3); k--) {
      if (((bytes[k] ?? 0) & 0xc0) === 0xc0) {
        at = k;
        break;
      }
    }
  }
  const line = bytes.subarray(0, at).reduce((n, b) => (b === 0x0a ? n + 1 : n), 1);
  throw new InputError(`manifest file "${path}" is not UTF-8 text: byte 0x${(bytes[at] ?? 0).toString(16).padStart(2, '0')} at offset ${at} (line ${line}); save it as UTF-8`);
}

/** A string as JSON, cut to MAX_ECHO characters with its length when longer. */
function echoString(value: string): string {
  return value.length <= MAX_ECHO ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, MAX_ECHO))}… (${value.length.toLocaleString('en-US')} characters)`;
}

/** Longest list of known names a message shows; a typo in a 300-unit manifest should not print 300 names. */
const MAX_KNOWN_LISTED = 30;

/** Reads and validates a manifest file. The file path names the source in error messages. */
export async function loadManifestFile(path: string): Promise<Manifest> {
  let text: string;
  try {
    const bytes = await readFile(path);
    if (bytes.length > MAX_MANIFEST_BYTES) {
      throw new InputError(`manifest file "${path}" is ${bytes.length.toLocaleString('en-US')} bytes; a manifest may be at most ${MAX_MANIFEST_BYTES.toLocaleString('en-US')} (is it the right file?)`);
    }
    text = decodeUtf8(bytes, path);
  } catch (error) {
    if (error instanceof InputError) throw error;
    const code = (error as { code?: unknown }).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : String(error);
    throw new InputError(`cannot read manifest file "${path}": ${why}; check the path given`, { cause: error });
  }
  return parseManifest(text, path);
}

/**
 * Parses manifest YAML and validates it. `source` names the document in the error (a file path, "manifest").
 * YAML syntax errors are reported alone (with line and column): what follows a syntax error cannot be trusted.
 */
export function parseManifest(text: string, source = 'manifest'): Manifest {
  const lineCounter = new LineCounter();
  // `merge: true` lets teams share fields with YAML merge keys (`<<: *defaults`).
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, merge: true });
  if (doc.errors.length > 0) {
    throw new ManifestError(
      doc.errors.map((error) => syntaxIssue(error, lineCounter)),
      source,
    );
  }
  const unresolved: ManifestIssue[] = [];
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) !== undefined) return;
      const where = alias.range ? ` (line ${lineCounter.linePos(alias.range[0]).line})` : '';
      unresolved.push({ path: '', message: `YAML alias *${alias.source} refers to no anchor &${alias.source} defined before it${where}` });
    },
  });
  if (unresolved.length > 0) throw new ManifestError(unresolved, source);
  let value: unknown;
  try {
    // The alias limit guards against "billion laughs" documents.
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new ManifestError([{ path: '', message: `the YAML cannot be turned into data: ${error instanceof Error ? error.message : String(error)}` }], source);
  }
  return validate(value, source, (path) => lineOf(doc, lineCounter, path));
}

/** Validates a manifest already parsed into plain data (JSON input, a test). Messages carry no line numbers. */
export function validateManifest(value: unknown, source = 'manifest'): Manifest {
  return validate(value, source);
}

/**
 * The whole-manifest checks on units: duplicate ids, `dependsOn` naming an unknown unit, the unit itself or the same
 * unit twice, and dependency cycles. Works on loosely typed units (what the YAML held), so it can run beside the
 * schema check; the planner runs it on typed units too, in case a manifest was built in code without validation.
 */
export function unitGraphIssues(units: readonly unknown[]): ManifestIssue[] {
  return graphIssues(units).map((issue) => ({ path: formatPath(issue.path), message: issue.message }));
}

function validate(value: unknown, source: string, lineAt?: (path: readonly PathSegment[]) => number | undefined): Manifest {
  const parsed = manifestSchema.safeParse(value);
  const issues: RawIssue[] = parsed.success ? [] : parsed.error.issues.flatMap((issue) => describeSchemaIssue(issue, value));
  issues.push(...wholeManifestIssues(value));
  if (parsed.success && issues.length === 0) return parsed.data;
  if (issues.length === 0) issues.push({ path: [], message: 'the manifest does not match its schema' });
  const located = issues.map((issue) => ({ ...issue, line: lineAt?.(issue.path) }));
  // In file order when lines are known, so a person fixes the file top to bottom (the sort is stable).
  located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  throw new ManifestError(
    located.map(({ path, message, line }) => ({ path: formatPath(path), message: line === undefined ? message : `${message} (line ${line})` })),
    source,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Whole-manifest checks

function wholeManifestIssues(root: unknown): RawIssue[] {
  if (!isRecord(root) || !Array.isArray(root.units)) return [];
  return [...graphIssues(root.units), ...connectionIssues(root, root.units)];
}

function graphIssues(units: readonly unknown[]): RawIssue[] {
  const issues: RawIssue[] = [];
  const firstIndex = new Map<string, number>();
  units.forEach((unit, i) => {
    if (!isRecord(unit) || typeof unit.id !== 'string') return;
    const earlier = firstIndex.get(unit.id);
    if (earlier === undefined) {
      firstIndex.set(unit.id, i);
    } else {
      issues.push({
        path: ['units', i, 'id'],
        message: `duplicate unit id "${unit.id}": units[${earlier}] and units[${i}] both use it; give each unit its own id`,
      });
    }
  });
  const known = [...firstIndex.keys()];

  const graphUnits: GraphUnit[] = [];
  units.forEach((unit, i) => {
    if (!isRecord(unit)) return;
    const id = typeof unit.id === 'string' ? unit.id : undefined;
    const dependsOn: string[] = [];
    if (Array.isArray(unit.dependsOn)) {
      const firstMention = new Map<string, number>();
      unit.dependsOn.forEach((producer: unknown, j) => {
        if (typeof producer !== 'string') return; // the schema check reports it
        const path = ['units', i, 'dependsOn', j];
        const mentioned = firstMention.get(producer);
        if (producer === id) {
          issues.push({ path, message: `unit "${clip(id)}" depends on itself; remove this entry` });
        } else if (!firstIndex.has(producer)) {
          issues.push({ path, message: `unknown unit "${clip(producer)}" (known: ${listKnown(known)})${didYouMean(producer, known)}` });
        } else if (mentioned !== undefined) {
          issues.push({ path, message: `"${producer}" is already listed at dependsOn[${mentioned}]; remove one of the two` });
        } else {
          dependsOn.push(producer);
        }
        if (mentioned === undefined) firstMention.set(producer, j);
      });
    }
    if (id !== undefined && firstIndex.get(id) === i) graphUnits.push({ id, dependsOn });
  });

  for (const cycle of findCycles(dependencyGraph(graphUnits))) {
    // cycle = [start, ..., closing, start] in data-flow order: `start` dependsOn `closing` closes it.
    const start = cycle[0]!;
    const closing = cycle[cycle.length - 2]!;
    const index = firstIndex.get(start)!;
    const entries = (units[index] as { dependsOn: unknown[] }).dependsOn;
    issues.push({
      path: ['units', index, 'dependsOn', entries.indexOf(closing)],
      message:
        `dependency cycle: ${cycle.join(' -> ')} (each unit feeds the next, so no rollback order exists; ` +
        'remove one of these dependsOn entries)',
    });
  }
  return issues;
}

/** The connection engine each table unit type needs. */
const engineByUnitType: Record<string, string> = { 'postgres-table': 'postgres', 'mysql-table': 'mysql' };

function connectionIssues(root: Record<string, unknown>, units: readonly unknown[]): RawIssue[] {
  // A `connections` that is not a mapping is reported by the schema; checking units against it would only add noise.
  if (root.connections !== undefined && !isRecord(root.connections)) return [];
  const connections = root.connections ?? {};
  const names = Object.keys(connections);
  const issues: RawIssue[] = [];
  units.forEach((unit, i) => {
    if (!isRecord(unit) || typeof unit.type !== 'string' || typeof unit.connection !== 'string' || unit.connection === '') return;
    const needs = Object.hasOwn(engineByUnitType, unit.type) ? engineByUnitType[unit.type] : undefined;
    if (needs === undefined) return;
    const name = unit.connection;
    const path = ['units', i, 'connection'];
    if (!Object.hasOwn(connections, name)) {
      issues.push({
        path,
        message:
          names.length > 0
            ? `unknown connection "${clip(name)}" (known: ${listKnown(names)})${didYouMean(name, names)}`
            : `unknown connection "${name}": the manifest defines no connections; add it under "connections" (engine, and url or secretArn)`,
      });
      return;
    }
    const engine = (connections[name] as { engine?: unknown } | null)?.engine;
    if (typeof engine === 'string' && engine !== needs) {
      issues.push({
        path,
        message: `connection "${name}" has engine "${engine}", but a ${unit.type} unit needs a ${needs} connection; name a ${needs} connection here`,
      });
    }
  });
  return issues;
}

// ---------------------------------------------------------------------------------------------------------------
// Schema issues, reworded: what is wrong, what was found, what is allowed

function describeSchemaIssue(issue: z.core.$ZodIssue, root: unknown): RawIssue[] {
  const path = [...issue.path] as PathSegment[];
  const value = valueAt(root, path);
  const field = path[path.length - 1];

  switch (issue.code) {
    case 'invalid_type': {
      if (path.length === 0) {
        if (value === null || value === undefined) {
          return [{ path, message: 'the manifest is empty; it needs a mapping with "pipeline", "connections" and "units"' }];
        }
        return [{ path, message: `the manifest must be a mapping with "pipeline", "connections" and "units"; got ${describeValue(value)}` }];
      }
      const parent = valueAt(root, path.slice(0, -1));
      if (typeof field === 'string' && isRecord(parent) && !Object.hasOwn(parent, field)) {
        return [{ path, message: `missing required field "${field}"` }];
      }
      let hint = '';
      if (value === null) hint = ' (an empty value: give it a value or remove the field)';
      else if (issue.expected === 'string' && (typeof value === 'number' || typeof value === 'boolean')) hint = '; quote it to make it a string';
      return [{ path, message: `expected ${describeExpected(issue.expected)}, got ${describeValue(value)}${hint}` }];
    }
    case 'unrecognized_keys': {
      const allowed = allowedFieldsAt(path, root);
      return issue.keys.map((key) => ({
        path: [...path, key],
        message: `unknown field "${key}"${allowed.length > 0 ? ` (allowed: ${allowed.join(', ')})` : ''}${didYouMean(key, allowed)}`,
      }));
    }
    case 'invalid_union': {
      if (field === 'type' && 'discriminator' in issue) {
        const known = Object.keys(unitSchemasByType).join(', ');
        return [
          {
            path,
            message: value === undefined ? `missing required field "type" (one of: ${known})` : `unknown unit type ${describeValue(value)} (known: ${known})`,
          },
        ];
      }
      return [{ path, message: issue.message }];
    }
    case 'invalid_key':
      return [{ path, message: `${describeValue(field)} is not a valid name: ${issue.issues.map((inner) => inner.message).join('; ')}` }];
    case 'invalid_value':
      return [
        {
          path,
          message: `unknown ${typeof field === 'string' ? field : 'value'} ${describeValue(value)} (known: ${issue.values.map((v) => String(v)).join(', ')})`,
        },
      ];
    default: {
      // Never echo a URL: it may hold a password.
      const echo = typeof value === 'string' && value !== '' && field !== 'url' ? ` (got ${echoString(value)})` : '';
      return [{ path, message: `${issue.message}${echo}` }];
    }
  }
}

function allowedFieldsAt(path: readonly PathSegment[], root: unknown): string[] {
  if (path.length === 0) return Object.keys(manifestSchema.shape);
  if (path[0] === 'units' && typeof path[1] === 'number') {
    if (path.length === 2) {
      const type = (valueAt(root, path) as { type?: unknown } | undefined)?.type;
      const schemas: Record<string, z.ZodObject> = unitSchemasByType;
      const own = typeof type === 'string' && Object.hasOwn(schemas, type) ? schemas[type] : undefined;
      const fields = own ? Object.keys(own.shape) : Object.values(schemas).flatMap((schema) => Object.keys(schema.shape));
      return [...new Set(fields)];
    }
    if (path.length === 3 && path[2] === 'checks') return Object.keys(checksFieldsSchema.shape);
  }
  if (path[0] === 'connections' && path.length === 2) return Object.keys(connectionFieldsSchema.shape);
  return [];
}

function describeExpected(expected: string): string {
  const names: Record<string, string> = { array: 'a list', object: 'a mapping', string: 'a string', boolean: 'true or false', number: 'a number' };
  return names[expected] ?? expected;
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return echoString(value);
  return `${typeof value === 'number' ? 'a number' : `a ${typeof value}`} (${String(value)})`;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths, lines, names

/** `['units', 2, 'dependsOn', 0]` → `units[2].dependsOn[0]`; odd keys quoted: `connections["my db"]`. */
function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

function valueAt(root: unknown, path: readonly PathSegment[]): unknown {
  let value = root;
  for (const segment of path) {
    if (Array.isArray(value) && typeof segment === 'number') value = value[segment];
    else if (isRecord(value) && Object.hasOwn(value, segment)) value = value[segment];
    else return undefined;
  }
  return value;
}

/**
 * The line of the deepest YAML node along `path`: the key's line for a field, the item's line for a list entry.
 * A field that is missing points at the mapping that lacks it.
 */
function lineOf(doc: Document, lineCounter: LineCounter, path: readonly PathSegment[]): number | undefined {
  let node: unknown = doc.contents;
  let offset = rangeStart(node);
  for (const segment of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) break;
      offset = rangeStart(pair.key) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item: unknown = node.items[segment];
      if (item === undefined) break;
      offset = rangeStart(item) ?? offset;
      node = item;
    } else {
      break;
    }
  }
  return offset === undefined ? undefined : lineCounter.linePos(offset).line;
}

function rangeStart(node: unknown): number | undefined {
  return isNode(node) ? node.range?.[0] : undefined;
}

function syntaxIssue(error: YAMLError, lineCounter: LineCounter): ManifestIssue {
  const { line, col } = lineCounter.linePos(error.pos[0]);
  return { path: '', message: `YAML syntax error: ${error.message} (line ${line}, column ${col})` };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function listKnown(names: readonly string[]): string {
  if (names.length === 0) return 'none';
  if (names.length <= MAX_KNOWN_LISTED) return names.map(clip).join(', ');
  return `${names.slice(0, MAX_KNOWN_LISTED).map(clip).join(', ')}, … and ${names.length - MAX_KNOWN_LISTED} more`;
}

/** A name as messages show it: cut, with its length, when it is longer than any valid name could be. */
function clip(name: string): string {
  return name.length <= MAX_ECHO ? name : `${name.slice(0, MAX_ECHO)}… (${name.length.toLocaleString('en-US')} characters)`;
}

/** `; did you mean "staging"?` when one known name is a likely typo of `name`, else nothing. */
function didYouMean(name: string, known: readonly string[]): string {
  // Names are at most 63 characters: anything longer is not a typo of one (and an edit distance of two huge strings
  // would cost their product in time).
  if (name.length > 64) return '';
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    if (Math.abs(candidate.length - name.length) > 2) continue;
    const distance = candidate.toLowerCase() === name.toLowerCase() ? 0 : editDistance(name, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  const tolerance = Math.min(2, Math.floor(name.length / 3));
  return best !== undefined && best !== name && bestDistance <= tolerance ? `; did you mean "${best}"?` : '';
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
