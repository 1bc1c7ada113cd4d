import type { Cost, RunEstimate } from '../plan/estimate.ts';
import { REQUEST_KINDS, type RequestKind } from '../plan/requests.ts';

/**
 * An estimate as people read it: in a terminal (aligned columns) and in Markdown; and an estimate set against what a
 * run then did. Durations in seconds (minutes and hours once they are long), bytes in binary units, prices in USD.
 */

/** Column titles of the request kinds, short enough for one terminal line. */
const SHORT: Record<RequestKind, string> = {
  'S3 ListObjectVersions': 'S3 List',
  'S3 GetObject': 'S3 Get',
  'S3 HeadObject': 'S3 Head',
  'S3 CopyObject': 'S3 Copy',
  'S3 DeleteObjects': 'S3 DelObjs',
  'S3 PutObject': 'S3 Put',
  'DynamoDB writes': 'DDB writes',
  'Lambda invocations': 'Lambda',
  'Step Functions transitions': 'SFN trans',
};

export function formatSeconds(s: number): string {
  // Local runs and small units take milliseconds; a second is the unit people think in above that.
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** USD with enough digits that a fraction of a cent still shows (a rollback often costs less than one). */
export function formatUsd(n: number): string {
  if (n === 0) return '$0';
  if (n >= 1) return `$${n.toFixed(2)}`;
  const digits = Math.min(10, Math.max(2, 1 - Math.floor(Math.log10(n)) + 2));
  return `$${n.toFixed(digits)}`;
}

/** Rows as aligned columns: text left-aligned, numbers (and the columns named in `right`) right-aligned. */
function columns(rows: string[][], right: ReadonlySet<number>): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

/** Where the numbers come from, in one line. */
export function estimateBasis(e: RunEstimate): string {
  const region = e.region.note ? `${e.region.priced} (${e.region.note})` : e.region.priced;
  return `durations ${e.basis.text}; prices: AWS list prices for ${region} as of ${e.prices.asOf}`;
}

const rate = (n: number, unit: string) => `${n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toPrecision(2)} ${unit}/s`;

/** The throughput each unit type was estimated with, one line per type: what history (or the defaults) says. */
export function throughputLines(e: RunEstimate): string[] {
  const lines = Object.entries(e.basis.rates).map(([type, t]) => {
    const main = type === 's3-prefix' ? `${rate(t.objectsPerSecond, 'objects')}, ${formatBytes(t.bytesPerSecond)}/s` : type.endsWith('-table') ? rate(t.rowsPerSecond, 'rows') : 'no per-item rate';
    const from = t.samples > 0 ? `${t.samples} unit${t.samples === 1 ? '' : 's'} measured` : 'default';
    return `${type}: ${formatSeconds(t.fixedSeconds)} per unit + ${main}, ${formatSeconds(t.verifySeconds)} to verify (${from})`;
  });
  return ['throughput:', ...lines.map((l) => `  ${l}`), `  between stages: ${formatSeconds(e.basis.overheadSecondsPerStage)} per stage`];
}

/** The estimate in a terminal: per stage and unit, what moves and how long; what it costs; the requests by kind. */
export function renderEstimate(e: RunEstimate, indent = '  '): string[] {
  const work: string[][] = [['stage', 'unit', 'type', 'objects', 'bytes', 'rows', 'restore', 'verify', 'duration']];
  const cost: string[][] = [['stage', 'unit', 'S3', 'Lambda', 'Step Functions', 'DynamoDB', 'total']];
  const requests: string[][] = [['stage', 'unit', ...REQUEST_KINDS.map((k) => SHORT[k])]];
  // One scale for the whole table (a ten-millionth of a dollar, below which nothing is billed), so the points align.
  const usd = (n: number) => n.toFixed(7);
  const costRow = (stage: string, unit: string, c: Cost) => [stage, unit, usd(c.s3), usd(c.lambda), usd(c.stepFunctions), usd(c.dynamodb), usd(c.total)];
  for (const st of e.stages) {
    const n = String(st.index + 1);
    for (const u of st.units) {
      work.push([n, u.unitId, u.type, String(u.objects), formatBytes(u.bytes), String(u.rows), formatSeconds(u.restoreSeconds), formatSeconds(u.verifySeconds), '']);
      cost.push(costRow(n, u.unitId, u.costUsd));
      requests.push([n, u.unitId, ...REQUEST_KINDS.map((k) => String(u.requests[k]))]);
    }
    work.push([n, '(stage)', '', String(st.objects), formatBytes(st.bytes), String(st.rows), '', '', formatSeconds(st.seconds)]);
    cost.push(costRow(n, '(stage)', st.costUsd));
    requests.push([n, '(stage)', ...REQUEST_KINDS.map((k) => String(st.requests[k]))]);
  }
  work.push(['', '(run)', '', '', '', '', '', '', formatSeconds(e.overhead.seconds)]);
  cost.push(costRow('', '(run)', e.overhead.costUsd));
  requests.push(['', '(run)', ...REQUEST_KINDS.map((k) => String(e.overhead.requests[k]))]);
  work.push(['', 'total', '', String(e.totals.objects), formatBytes(e.totals.bytes), String(e.totals.rows), '', '', formatSeconds(e.totals.seconds)]);
  cost.push(costRow('', 'total', e.totals.costUsd));
  requests.push(['', 'total', ...REQUEST_KINDS.map((k) => String(e.totals.requests[k]))]);
  const table = (rows: string[][], firstNumber: number) => columns(rows, new Set(rows[0]!.map((_, i) => i).filter((i) => i >= firstNumber))).map((l) => `${indent}  ${l}`);
  return [
    `${indent}estimate of the rollback (${estimateBasis(e)}):`,
    ...throughputLines(e).map((l) => `${indent}  ${l}`),
    ...table(work, 3),
    `${indent}cost in USD:`,
    ...table(cost, 2),
    `${indent}requests by kind:`,
    ...table(requests, 2),
    `${indent}total ${formatUsd(e.totals.costUsd.total)}, recovery time ${formatSeconds(e.totals.seconds)} (${e.stages.length} stage${e.stages.length === 1 ? '' : 's'} one after the other, the units of a stage side by side)`,
  ];
}

/** One line of "estimate against actual". */
export interface EstimateVsActualRow {
  what: string;
  estimatedSeconds: number;
  actualSeconds?: number;
  estimatedWrites: number;
  actualWrites?: number;
}

/**
 * Estimate against actual, per stage and in total: duration, and what was moved (objects and rows, quarantine copies
 * included, as the estimate counts them). Stages are matched by index; a stage that did not run has no actual.
 */
export function estimateVsActual(
  e: RunEstimate,
  actual: { stages: { index: number; durationMs?: number; objects: number; rows: number; ran: boolean }[]; recoverySeconds?: number },
): EstimateVsActualRow[] {
  const rows: EstimateVsActualRow[] = e.stages.map((st) => {
    const a = actual.stages.find((s) => s.index === st.index);
    return {
      what: `stage ${st.index + 1}`,
      estimatedSeconds: st.seconds,
      ...(a?.ran && a.durationMs !== undefined ? { actualSeconds: a.durationMs / 1000 } : {}),
      estimatedWrites: st.objects + st.rows,
      ...(a?.ran ? { actualWrites: a.objects + a.rows } : {}),
    };
  });
  const ran = actual.stages.filter((s) => s.ran);
  rows.push({
    what: 'total (recovery time)',
    estimatedSeconds: e.totals.seconds,
    ...(actual.recoverySeconds !== undefined ? { actualSeconds: actual.recoverySeconds } : {}),
    estimatedWrites: e.totals.objects + e.totals.rows,
    ...(ran.length > 0 ? { actualWrites: ran.reduce((n, s) => n + s.objects + s.rows, 0) } : {}),
  });
  return rows;
}

const ratio = (r: EstimateVsActualRow) => (r.actualSeconds !== undefined && r.actualSeconds > 0 ? `${(r.estimatedSeconds / r.actualSeconds).toFixed(2)}×` : '—');

export function renderEstimateVsActual(rows: readonly EstimateVsActualRow[], indent = '  '): string[] {
  const table = [['', 'estimated', 'actual', 'estimate/actual', 'objects+rows estimated', 'objects+rows actual']];
  for (const r of rows) {
    table.push([
      r.what,
      formatSeconds(r.estimatedSeconds),
      r.actualSeconds !== undefined ? formatSeconds(r.actualSeconds) : 'did not run',
      ratio(r),
      String(r.estimatedWrites),
      r.actualWrites !== undefined ? String(r.actualWrites) : '—',
    ]);
  }
  return columns(table, new Set([1, 2, 3, 4, 5])).map((l) => `${indent}${l}`);
}

export function estimateVsActualMarkdown(rows: readonly EstimateVsActualRow[]): string[] {
  const out = ['| | estimated | actual | estimate / actual | objects + rows estimated | objects + rows actual |', '|---|---:|---:|---:|---:|---:|'];
  for (const r of rows) {
    out.push(
      `| ${r.what} | ${formatSeconds(r.estimatedSeconds)} | ${r.actualSeconds !== undefined ? formatSeconds(r.actualSeconds) : 'did not run'} | ${ratio(r)} | ${r.estimatedWrites} | ${r.actualWrites ?? '—'} |`,
    );
  }
  return out;
}
