/**
 * Requests counted at the server: moto's own request recorder (moto-api/recorder), which logs every HTTP request its
 * Flask app dispatches (method, raw URL, headers) to a file, one JSON line each, whatever client sent it. The bench
 * points it at a temporary file (MOTO_RECORDER_FILEPATH, set before moto starts), turns it on around one tool's
 * restore only, downloads the log, and classifies each line by the S3 REST API's shape (method, key or not, query
 * parameters, x-amz-copy-source). The SDK-side count of our own tool is printed next to it as a cross-check.
 */

export type Kind = 'LIST' | 'HEAD' | 'GET' | 'COPY' | 'PUT' | 'DELETE' | 'DeleteObjects' | 'other';
export const KINDS: Kind[] = ['LIST', 'HEAD', 'GET', 'COPY', 'PUT', 'DELETE', 'DeleteObjects', 'other'];

export interface RecordedRequest {
  kind: Kind;
  /** The S3 operation it is (ListObjectVersions, CopyObject, …). */
  op: string;
  bucket: string;
  key: string | undefined;
  /** For a copy: the source, decoded. */
  copySource?: { bucket: string; key: string; versionId: string | undefined };
}

export interface RequestTally {
  total: number;
  byKind: Map<Kind, number>;
  byOp: Map<string, number>;
  requests: RecordedRequest[];
}

function header(headers: Record<string, string>, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === wanted) return v;
  return undefined;
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** One recorded line → what S3 operation it was (path-style URLs, as every client here uses against 127.0.0.1). */
export function classify(method: string, rawUrl: string, headers: Record<string, string>): RecordedRequest {
  const url = new URL(rawUrl, 'http://localhost');
  const segments = url.pathname.replace(/^\//, '').split('/');
  const bucket = decodeURIComponent(segments[0] ?? '');
  const keyPath = segments.slice(1).join('/');
  const key = keyPath === '' ? undefined : decodeURIComponent(keyPath);
  const q = url.searchParams;
  const firstParam = [...q.keys()][0];
  const base = { bucket, key };
  const m = method.toUpperCase();
  if (m === 'HEAD') return { ...base, kind: 'HEAD', op: key ? 'HeadObject' : 'HeadBucket' };
  if (m === 'GET') {
    if (key) return { ...base, kind: q.has('tagging') ? 'other' : 'GET', op: q.has('tagging') ? 'GetObjectTagging' : 'GetObject' };
    if (q.has('versions')) return { ...base, kind: 'LIST', op: 'ListObjectVersions' };
    if (q.get('list-type') === '2') return { ...base, kind: 'LIST', op: 'ListObjectsV2' };
    if (firstParam && !['prefix', 'marker', 'delimiter', 'max-keys', 'encoding-type'].includes(firstParam)) {
      return { ...base, kind: 'other', op: `GetBucket${cap(firstParam)}` };
    }
    return { ...base, kind: 'LIST', op: 'ListObjects' };
  }
  if (m === 'PUT') {
    const source = header(headers, 'x-amz-copy-source');
    if (key && source) {
      const [path = '', query = ''] = source.split('?');
      const decoded = decodeURIComponent(path).replace(/^\//, '');
      const slash = decoded.indexOf('/');
      const copySource = {
        bucket: decoded.slice(0, slash),
        key: decoded.slice(slash + 1),
        versionId: new URLSearchParams(query).get('versionId') ?? undefined,
      };
      return { ...base, kind: 'COPY', op: q.has('uploadId') ? 'UploadPartCopy' : 'CopyObject', copySource };
    }
    if (key) return { ...base, kind: q.has('tagging') ? 'other' : 'PUT', op: q.has('uploadId') ? 'UploadPart' : q.has('tagging') ? 'PutObjectTagging' : 'PutObject' };
    return { ...base, kind: 'other', op: firstParam ? `PutBucket${cap(firstParam)}` : 'CreateBucket' };
  }
  if (m === 'DELETE') return { ...base, kind: key ? 'DELETE' : 'other', op: key ? (q.has('versionId') ? 'DeleteObject (version)' : 'DeleteObject') : 'DeleteBucket' };
  if (m === 'POST') {
    if (q.has('delete')) return { ...base, kind: 'DeleteObjects', op: 'DeleteObjects' };
    return { ...base, kind: 'other', op: q.has('uploads') ? 'CreateMultipartUpload' : q.has('uploadId') ? 'CompleteMultipartUpload' : `POST ${firstParam ?? ''}`.trim() };
  }
  return { ...base, kind: 'other', op: m };
}

export function tally(requests: RecordedRequest[]): RequestTally {
  const byKind = new Map<Kind, number>();
  const byOp = new Map<string, number>();
  for (const r of requests) {
    byKind.set(r.kind, (byKind.get(r.kind) ?? 0) + 1);
    byOp.set(r.op, (byOp.get(r.op) ?? 0) + 1);
  }
  return { total: requests.length, byKind, byOp, requests };
}

/** moto's recorder, driven over its HTTP API. */
export class MotoRecorder {
  constructor(private readonly endpoint: string) {}

  private async call(path: string, method: 'GET' | 'POST'): Promise<string> {
    const res = await fetch(`${this.endpoint}/moto-api/recorder/${path}`, { method });
    const text = await res.text();
    if (!res.ok) throw new Error(`moto recorder ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
    return text;
  }

  /** Runs `fn` with recording on (from an empty log) and returns its result with the requests moto received meanwhile. */
  async record<T>(fn: () => Promise<T>): Promise<{ result: T; tally: RequestTally }> {
    await this.call('reset-recording', 'POST');
    await this.call('start-recording', 'POST');
    let result: T;
    try {
      result = await fn();
    } finally {
      await this.call('stop-recording', 'POST');
    }
    const log = await this.call('download-recording', 'GET');
    const requests: RecordedRequest[] = [];
    for (const line of log.split('\n')) {
      if (line.trim() === '') continue;
      const entry = JSON.parse(line) as { method: string; url: string; headers: Record<string, string> };
      requests.push(classify(entry.method, entry.url, entry.headers ?? {}));
    }
    return { result, tally: tally(requests) };
  }
}
