import { appendFileSync, readFileSync } from 'node:fs';
import { Agent, createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';

/**
 * "Never destroy a data version", checked at the server for every request of the test run, whoever sends it.
 *
 * An HTTP proxy stands between every AWS client of the tests and moto (AWS_ENDPOINT_URL points at it). Before it
 * forwards a request that removes an object version for good (DeleteObject with a versionId, or an entry of a
 * DeleteObjects with a VersionId), it asks moto what that version is (HEAD ?versionId=): a delete marker answers 405
 * with `x-amz-delete-marker: true`, a version that holds data answers 200. Removing a delete marker uncovers data and
 * is what a rollback does; removing a data version is a violation, recorded and reported at the end of the run,
 * unless it is
 * - an object under `restore-points/` (etl-rollback's own restore-point files, which release deletes on purpose when
 *   their retention ends), or under `drills/<run>/` (a drill's scratch copies, which its cleanup deletes: copies of
 *   restore-point data, never the only one), or
 * - a request a test marks as a deliberate destruction (header `x-etl-rollback-test-intent: destroy-version`: a test
 *   that plays a hostile user, or that checks Object Lock refuses it). Product code never sends that header.
 * Not covered here: buckets without versioning (there a DELETE or an overwrite destroys data whatever its form;
 * the copy mode keeps the object in the state bucket's quarantine first, which its own tests check).
 */

export const TEST_INTENT_HEADER = 'x-etl-rollback-test-intent';

/**
 * Request counting, at the server side of the wire: a test client whose requests carry `x-etl-rollback-test-count: <tag>`
 * (see countingClient in aws.ts) has each request it actually sends (SDK retries included) counted under that tag, by
 * operation (`X-Amz-Target` without its service prefix, `GetTable`; else `S3 <method>`), and a Glue batch's entries as
 * `<operation> entries`. The counts are read with
 * `GET <endpoint>/__etl-rollback-test/requests/<tag>` (JSON: operation → count), answered by the proxy itself.
 */
export const TEST_COUNT_HEADER = 'x-etl-rollback-test-count';
export const COUNTS_PATH = '/__etl-rollback-test/requests/';

/** The operation of a request as counted: `GetPartitions` for a JSON-protocol target, `S3 PUT` otherwise. */
export function operationOf(method: string, headers: IncomingHttpHeaders): string {
  const target = headers['x-amz-target'];
  if (typeof target === 'string' && target.length > 0) return target.slice(target.lastIndexOf('.') + 1);
  return `S3 ${method}`;
}

/**
 * The request log: every mutating S3 request (PUT, POST, DELETE) that passed the guard, one JSON line each, in the file
 * named by this variable (set by the global setup for the whole run). A test reads it back (`mutatingS3Requests`) to
 * prove at the wire that nothing it ran wrote to a bucket or prefix, whoever sent the request.
 */
export const REQUEST_LOG_ENV = 'ETL_ROLLBACK_TEST_S3_REQUEST_LOG';

export interface LoggedS3Request {
  method: string;
  bucket: string;
  key: string;
  /** The query string (`versionId=…`, `delete`, `uploads`, …). */
  query: string;
  /** x-amz-copy-source of a copy: what was read, not written. */
  copySource?: string;
  userAgent: string;
}

/** The S3 request a path-style URL and its signature describe, or undefined for another service (DynamoDB, SQS, …). */
export function s3RequestOf(method: string, url: URL, headers: IncomingHttpHeaders): LoggedS3Request | undefined {
  if (!/\/s3\/aws4_request/.test(String(headers.authorization ?? ''))) return undefined;
  const [, bucket = '', ...rest] = url.pathname.split('/');
  const copySource = headers['x-amz-copy-source'];
  return {
    method,
    bucket: decodeURIComponent(bucket),
    key: decodeURIComponent(rest.join('/')),
    query: url.search.replace(/^\?/, ''),
    ...(copySource ? { copySource: decodeURIComponent(String(copySource)) } : {}),
    userAgent: String(headers['user-agent'] ?? ''),
  };
}

export interface Violation {
  bucket: string;
  key: string;
  versionId: string;
  request: string;
  userAgent: string;
}

export interface VersionGuard {
  endpoint: string;
  stats(): { checked: number; markers: number; allowed: number; violations: Violation[] };
  stop(): Promise<void>;
}

interface Target {
  bucket: string;
  key: string;
  versionId: string;
}

const unescapeXml = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

/** The versions a request would remove for good: path-style DeleteObject ?versionId=, or DeleteObjects (?delete). */
export function versionDeletions(method: string, url: URL, body: Buffer): Target[] {
  const [, bucket, ...rest] = url.pathname.split('/');
  if (!bucket) return [];
  if (method === 'DELETE' && url.searchParams.has('versionId') && rest.length > 0) {
    return [{ bucket: decodeURIComponent(bucket), key: decodeURIComponent(rest.join('/')), versionId: url.searchParams.get('versionId')! }];
  }
  if (method === 'POST' && url.searchParams.has('delete') && rest.join('') === '') {
    const out: Target[] = [];
    for (const m of body.toString('utf8').matchAll(/<Object>([\s\S]*?)<\/Object>/g)) {
      const key = /<Key>([\s\S]*?)<\/Key>/.exec(m[1]!)?.[1];
      const versionId = /<VersionId>([\s\S]*?)<\/VersionId>/.exec(m[1]!)?.[1];
      if (key !== undefined && versionId !== undefined) out.push({ bucket: decodeURIComponent(bucket), key: unescapeXml(key), versionId: unescapeXml(versionId) });
    }
    return out;
  }
  return [];
}

/** Glue batch requests' entry lists: counted as `<operation> entries` next to the requests. */
const ENTRY_LISTS = ['PartitionInputList', 'PartitionsToDelete', 'Entries'];

/** What one request adds to the counts: its operation, and for a batch its entries. */
export function countsOf(method: string, headers: IncomingHttpHeaders, body: Buffer): Record<string, number> {
  const operation = operationOf(method, headers);
  const out: Record<string, number> = { [operation]: 1 };
  if (typeof headers['x-amz-target'] === 'string' && body.length > 0) {
    try {
      const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      for (const list of ENTRY_LISTS) if (Array.isArray(parsed[list])) out[`${operation} entries`] = (parsed[list] as unknown[]).length;
    } catch {
      /* not JSON: the request alone is counted */
    }
  }
  return out;
}

export async function startVersionGuard(target: string, options: { log?: string; requestLog?: string } = {}): Promise<VersionGuard> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const stats = { checked: 0, markers: 0, allowed: 0, violations: [] as Violation[] };
  const counts = new Map<string, Record<string, number>>();

  // Signed, like any client's (a bucket policy may refuse anonymous or non-TLS requests), straight to moto.
  const s3 = new S3Client({ endpoint: target, forcePathStyle: true, region: 'us-east-1', maxAttempts: 1, credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
  const head = async (t: Target): Promise<{ status: number; marker: boolean }> => {
    try {
      await s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: t.key, VersionId: t.versionId }));
      return { status: 200, marker: false };
    } catch (error) {
      const response = (error as { $response?: { statusCode?: number; headers?: Record<string, string> } }).$response;
      return { status: response?.statusCode ?? 0, marker: response?.headers?.['x-amz-delete-marker'] === 'true' };
    }
  };

  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.startsWith(COUNTS_PATH)) {
      const tag = decodeURIComponent(req.url.slice(COUNTS_PATH.length));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(counts.get(tag) ?? {}));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const tag = req.headers[TEST_COUNT_HEADER];
        if (typeof tag === 'string') {
          const byOperation = counts.get(tag) ?? {};
          for (const [name, n] of Object.entries(countsOf(req.method ?? 'GET', req.headers, body))) byOperation[name] = (byOperation[name] ?? 0) + n;
          counts.set(tag, byOperation);
        }
        const url = new URL(req.url ?? '/', upstream);
        const intended = req.headers[TEST_INTENT_HEADER] === 'destroy-version';
        const method = req.method ?? 'GET';
        if (options.requestLog && (method === 'PUT' || method === 'POST' || method === 'DELETE')) {
          const logged = s3RequestOf(method, url, req.headers);
          if (logged) appendFileSync(options.requestLog, `${JSON.stringify(logged)}\n`);
        }
        // What each version is before the request: only data versions need a second look afterwards.
        const dataVersions: Target[] = [];
        for (const t of versionDeletions(req.method ?? 'GET', url, body)) {
          const found = await head(t);
          stats.checked += 1;
          if (found.marker) stats.markers += 1;
          else if (found.status === 200) dataVersions.push(t);
        }
        const headers: IncomingHttpHeaders = { ...req.headers };
        delete headers.expect;
        delete headers[TEST_INTENT_HEADER];
        delete headers[TEST_COUNT_HEADER];
        headers['content-length'] = String(body.length);
        delete headers['transfer-encoding'];
        const forward = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent }, (up) => {
          if (dataVersions.length === 0) {
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
            return;
          }
          const out: Buffer[] = [];
          up.on('data', (c: Buffer) => out.push(c));
          up.on('end', () => {
            void (async () => {
              // A data version gone after the request was destroyed by it (one the server refused to delete, under
              // Object Lock for instance, is still there).
              for (const t of dataVersions) {
                if ((await head(t)).status === 200) continue;
                if (intended || t.key.startsWith('restore-points/') || t.key.startsWith('drills/')) {
                  stats.allowed += 1;
                  continue;
                }
                const v: Violation = { ...t, request: `${req.method} ${req.url}`, userAgent: String(req.headers['user-agent'] ?? '') };
                stats.violations.push(v);
                if (options.log) appendFileSync(options.log, `${JSON.stringify(v)}\n`);
              }
              res.writeHead(up.statusCode ?? 502, up.headers);
              res.end(Buffer.concat(out));
            })();
          });
        });
        forward.on('error', (error) => {
          if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(`version guard: upstream error: ${error.message}`);
        });
        forward.end(body);
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stats: () => stats,
    stop: () =>
      new Promise<void>((resolve) => {
        agent.destroy();
        s3.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Every mutating S3 request of the test run so far (from the request log), optionally only those to `bucket`. */
export function mutatingS3Requests(bucket?: string): LoggedS3Request[] {
  const file = process.env[REQUEST_LOG_ENV];
  if (!file) throw new Error(`${REQUEST_LOG_ENV} is not set: the S3 request log is started by test/support/global-setup.ts`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const all = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LoggedS3Request);
  return bucket === undefined ? all : all.filter((r) => r.bucket === bucket);
}
