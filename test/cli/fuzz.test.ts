import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Context } from 'aws-lambda';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

/**
 * Hostile input, generated: malformed manifests (wrong types anywhere, unknown fields, deep nesting, YAML alias bombs,
 * bytes that are not UTF-8, huge files), malformed console inputs of the rollback machine, and malformed command
 * lines. Each must end in a clear error naming its place, exit code 2 (an InputError in the first state), never a
 * stack trace, and no request at all: the AWS endpoint and every database URL point at a listener here that counts
 * the connections it is offered, and the count must stay 0.
 */

let listener: Server;
let port = 0;
let connections = 0;
const HOST = '127.0.0.2';
const offered: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-fuzz-'));
const counts = { manifests: 0, consoleInputs: 0, commandLines: 0 };

type Main = (typeof import('../../cli/main.ts'))['main'];
let main: Main;
let planHandler: (event: unknown, context: Context) => Promise<unknown>;

beforeAll(async () => {
  listener = createServer((socket) => {
    connections += 1;
    // What connected, for the failure message: the first bytes it sends (a request line, a database handshake).
    socket.once('data', (chunk: Buffer) => {
      offered.push(chunk.subarray(0, 600).toString('latin1'));
      socket.destroy();
    });
    setTimeout(() => socket.destroy(), 200).unref();
  });
  // 127.0.0.2, which no other test uses (Linux routes all of 127/8 to loopback): a connection another test file makes
  // to a port it believes closed can never land here by chance.
  await new Promise<void>((resolve) => listener.listen(0, HOST, resolve));
  port = (listener.address() as AddressInfo).port;
  // Before the CLI and the handlers are loaded: their SDK clients read the endpoint when they are made.
  process.env.AWS_ENDPOINT_URL = `http://${HOST}:${port}`;
  ({ main } = await import('../../cli/main.ts'));
  ({ handler: planHandler } = (await import('../../lambdas/plan-rollback.ts')) as unknown as { handler: typeof planHandler });
});

afterAll(async () => {
  console.log(
    `fuzz: ${counts.manifests} manifests, ${counts.consoleInputs} console inputs, ${counts.commandLines} command lines; ` +
      `${connections} connection(s) offered to AWS or a database (must be 0)`,
  );
  await new Promise((resolve) => listener.close(resolve));
});

/** A valid manifest with every unit type, every URL and endpoint at the counting listener. */
function validManifest(): Record<string, unknown> {
  return {
    pipeline: 'orders',
    description: 'every unit type',
    connections: {
      warehouse: { engine: 'postgres', url: `postgres://etl@${HOST}:${port}/dw` },
      shop: { engine: 'mysql', url: `mysql://etl@${HOST}:${port}/shop` },
    },
    units: [
      { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/' },
      { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'], where: "day >= '2024-01-01'" },
      { id: 'carts', type: 'mysql-table', connection: 'shop', table: 'shop.carts', capture: 'copy-on-write' },
      { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily', dependsOn: ['staging', 'carts'], checks: { count: true, checksum: true } },
      { id: 'db', type: 'rds-instance', instanceId: 'orders-db' },
      { id: 'aurora', type: 'rds-cluster', clusterId: 'orders-aurora' },
      { id: 'catalog', type: 'glue-table', database: 'lake', table: 'raw_orders', partitions: "dt >= '2024-01-01'", catalogId: '123456789012', dependsOn: ['raw'] },
      { id: 'republish', type: 'custom', handler: { module: './compensations/republish.ts', export: 'handler' }, timeoutSeconds: 60, dependsOn: ['mart'] },
      { id: 'notify', type: 'custom', handler: { lambdaArn: 'arn:aws:lambda:eu-west-1:123456789012:function:orders-notify' } },
    ],
    retention: { days: 14 },
    policy: { windows: ['Sat 00:00-06:00 UTC'], approval: { required: true, timeoutMinutes: 60 }, pause: { rules: [{ name: 'orders-load' }], schedules: [{ name: 'hourly', group: 'etl' }] } },
  };
}

type Path = (string | number)[];

function pathsOf(value: unknown, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...pathsOf(v, [...at, i])));
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...pathsOf(v, [...at, k]));
  return out;
}

function setAt(root: unknown, path: Path, value: unknown): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let node = copy;
  for (const segment of path.slice(0, -1)) node = node[segment] as Record<string | number, unknown>;
  node[path.at(-1)!] = value;
  return copy;
}

const nested = (depth: number): unknown => {
  let v: unknown = [1];
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};

/** Values no field of the manifest accepts: a mapping with a field no schema knows, or lists nested deep. */
const neverValid = fc.oneof(
  fc.record({ $fuzz: fc.oneof(fc.integer(), fc.string(), fc.constant(null)) }),
  fc.integer({ min: 2, max: 400 }).map(nested),
);

const manifestMutation = fc.oneof(
  // Any node, the root included, replaced by a value no field accepts.
  fc.tuple(fc.nat(), neverValid).map(([pick, value]) => {
    const m = validManifest();
    const paths = pathsOf(m);
    return stringify(setAt(m, paths[pick % paths.length]!, value));
  }),
  // An unknown field in any mapping (a field the schemas do not list; in `connections`, a connection without an engine).
  fc.tuple(fc.nat(), fc.stringMatching(/^[a-z]{1,12}$/), fc.jsonValue()).map(([pick, name, value]) => {
    const m = validManifest();
    const objects = pathsOf(m).filter((p) => {
      let node: unknown = m;
      for (const s of p) node = (node as Record<string | number, unknown>)[s];
      return node !== null && typeof node === 'object' && !Array.isArray(node);
    });
    const at = objects[pick % objects.length]!;
    return stringify(setAt(m, [...at, `fz_${name}`], { $fuzz: value }));
  }),
  // A field's text made huge: an identifier, a table name, a window, far past what any of them allows.
  fc.tuple(fc.constantFrom<Path>(['pipeline'], ['units', 0, 'id'], ['units', 1, 'table'], ['policy', 'windows', 0], ['units', 4, 'instanceId']), fc.integer({ min: 100, max: 200_000 })).map(
    ([path, n]) => stringify(setAt(validManifest(), path, 'x'.repeat(n))),
  ),
  // YAML that expands without bound: aliases of aliases.
  fc.tuple(fc.integer({ min: 6, max: 12 }), fc.integer({ min: 6, max: 12 })).map(([levels, width]) => {
    let text = 'l0: &l0 ["lol"]\n';
    for (let i = 1; i <= levels; i++) text += `l${i}: &l${i} [${Array.from({ length: width }, () => `*l${i - 1}`).join(', ')}]\n`;
    return `${text}pipeline: *l${levels}\n`;
  }),
  // Flow collections nested deeper than any parser stack.
  fc.integer({ min: 1_000, max: 40_000 }).map((depth) => `pipeline: orders\nunits: ${'['.repeat(depth)}${']'.repeat(depth)}\n`),
  // Bytes that are not UTF-8, wherever they fall in an otherwise fine manifest.
  fc.tuple(fc.nat(), fc.constantFrom(0xff, 0xfe, 0xc0, 0x80, 0xe9)).map(([pick, byte]) => {
    const text = Buffer.from(stringify(validManifest()));
    const at = pick % text.length;
    return Buffer.concat([text.subarray(0, at), Buffer.from([byte]), text.subarray(at)]);
  }),
  // Text that is not a manifest at all.
  fc.oneof(fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))).filter((t) => !/^\s*pipeline:/.test(t)),
);

const STACK = /\n\s+at [^\n]*[(:]\d+/;

describe('hostile input: refused with the place named, exit 2, no stack trace, no request', () => {
  it('generated malformed manifests', async () => {
    await fc.assert(
      fc.asyncProperty(manifestMutation, async (doc) => {
        counts.manifests += 1;
        const file = join(dir, `m-${counts.manifests}.yaml`);
        writeFileSync(file, doc);
        for (const args of [
          ['rollback', file, '--deployment', 'd-1', '--dry-run', '--local'],
          ['snapshot', file, '--deployment', 'd-1', '--local'],
        ]) {
          let err = '';
          const code = await main(args, { out: () => undefined, err: (t) => (err += `${t}\n`) });
          expect(code, `${args[0]} ${String(doc).slice(0, 200)}: ${err}`).toBe(2);
          expect(err).toContain(file);
          expect(err).not.toMatch(STACK);
          expect(err.length).toBeLessThan(20_000);
        }
        expect(connections, offered.join(' | ')).toBe(0);
      }),
      { numRuns: 150 },
    );
  }, 120_000);

  it('generated malformed console inputs of the rollback machine fail in its first state', async () => {
    const valid = { pipeline: 'orders', deploymentId: 'd-1', units: ['raw'], dryRun: true, reason: 'bad numbers', requestedBy: 'sam', urgent: false };
    const input = fc.oneof(
      fc.tuple(fc.nat(), neverValid).map(([pick, value]) => {
        const paths = pathsOf(valid).filter((p) => p.length > 0);
        return setAt(valid, paths[pick % paths.length]!, value);
      }),
      fc.tuple(fc.stringMatching(/^[a-z]{1,10}$/), fc.jsonValue()).map(([name, value]) => ({ ...valid, [`fz_${name}`]: value })),
      fc.integer({ min: 81, max: 100_000 }).map((n) => ({ ...valid, deploymentId: 'd'.repeat(n) })),
      fc.integer({ min: 1001, max: 5000 }).map((n) => ({ ...valid, units: Array.from({ length: n }, (_, i) => `u${i}`) })),
      fc.jsonValue().filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)),
    );
    await fc.assert(
      fc.asyncProperty(input, async (request) => {
        counts.consoleInputs += 1;
        const error = await planHandler({ request, executionName: `fuzz-${counts.consoleInputs}` }, {} as Context).then(
          () => undefined,
          (e: unknown) => e as Error,
        );
        expect(error?.name, JSON.stringify(request).slice(0, 200)).toBe('InputError');
        expect(error!.message).toMatch(/^rollback request is invalid:\n {2}rollback request/);
        expect(error!.message.length).toBeLessThan(5_000);
        expect(connections, offered.join(' | ')).toBe(0);
      }),
      { numRuns: 150 },
    );
  }, 120_000);

  it('generated malformed command lines', async () => {
    const commands = ['validate', 'plan', 'snapshot', 'rollback', 'approve', 'reject', 'status', 'history', 'unlock', 'release'];
    const token = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('--local', '--json', '--dry-run', '--units', '--deployment', '--reason', '--resume', '-x', '--', '='));
    const argv = fc
      .tuple(fc.constantFrom(...commands), fc.array(token, { maxLength: 6 }), fc.stringMatching(/^[a-z]{1,10}$/))
      .map(([command, tokens, bad]) =>
        // An option no command has, right after the command: the line is wrong whatever else it holds. (Further on,
        // it could be taken as the value of an option before it, `--by --fz-x`, and the line be a valid one.)
        // Asking for help or the version (-h, -V, even run together with more letters) is a valid line: left out.
        [command, `--fz-${bad}`, ...tokens.filter((t) => t !== '--' && !/^(-h|-V|--help|--version)/.test(t))],
      );
    await fc.assert(
      fc.asyncProperty(argv, async (args) => {
        counts.commandLines += 1;
        let err = '';
        const code = await main(args, { out: () => undefined, err: (t) => (err += `${t}\n`) });
        expect(code, `${JSON.stringify(args)}: ${err}`).toBe(2);
        expect(err).not.toMatch(STACK);
        expect(err.trim()).not.toBe('');
        expect(connections, offered.join(' | ')).toBe(0);
      }),
      { numRuns: 200 },
    );
  }, 60_000);
});
