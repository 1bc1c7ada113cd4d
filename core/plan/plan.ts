import { InputError, ManifestError } from '../errors.ts';
import { unitGraphIssues } from '../manifest/load.ts';
import type { Manifest } from '../manifest/schema.ts';
import { dependencyGraph, downstreamClosure, type DependencyGraph } from '../manifest/graph.ts';

/**
 * A rollback as ordered stages. Stage 0 runs first.
 *
 * Consumers go before producers (reverse topological order): mart, then staging, then raw. Units in one stage never
 * depend on each other, directly or through other units, so a stage may restore them in parallel.
 */
export interface Plan {
  pipeline: string;
  /** The units asked for, sorted; every unit when none were named. */
  requested: string[];
  /** Every unit the rollback touches, in execution order (stage by stage, by id within a stage). */
  scope: string[];
  /** Units grouped into stages; within a stage sorted by id. */
  stages: string[][];
  /** unit id → why it is in scope: "requested" or "downstream of staging" (its in-scope producers). */
  reasons: Record<string, string>;
}

export interface PlanOptions {
  /** Units asked for. Absent or empty: the whole pipeline. */
  units?: readonly string[];
  /** Add every unit downstream of the requested ones (default true): they were derived from the bad data. */
  cascade?: boolean;
}

/**
 * Plans a rollback. Throws `InputError` when a requested unit is not in the manifest, and `ManifestError` when the
 * manifest's dependencies are broken (only possible for a manifest that did not come through `validateManifest`).
 * Deterministic: the same manifest (in any unit or dependsOn order) and request give the same plan.
 */
export function planRollback(manifest: Manifest, options: PlanOptions = {}): Plan {
  const issues = unitGraphIssues(manifest.units);
  if (issues.length > 0) throw new ManifestError(issues, manifest.pipeline);

  const graph = dependencyGraph(manifest.units);
  const known = new Set(graph.ids);
  const asked = options.units ?? [];
  const unknown = [...new Set(asked.filter((id) => !known.has(id)))];
  if (unknown.length > 0) {
    const names = unknown.map((id) => `"${id}"`).join(', ');
    throw new InputError(
      `unknown unit${unknown.length > 1 ? 's' : ''} ${names} requested for pipeline "${manifest.pipeline}" ` +
        `(known: ${[...graph.ids].sort().join(', ')}); check the names against the manifest`,
    );
  }

  const requested = [...new Set(asked.length > 0 ? asked : graph.ids)].sort();
  const cascade = options.cascade ?? true;
  const inScope = cascade ? downstreamClosure(graph, requested) : new Set(requested);

  const requestedSet = new Set(requested);
  const reasons: Record<string, string> = {};
  for (const id of [...inScope].sort()) {
    if (requestedSet.has(id)) {
      reasons[id] = 'requested';
    } else {
      const producers = graph.producers.get(id)!.filter((p) => inScope.has(p)).sort();
      reasons[id] = `downstream of ${producers.join(', ')}`;
    }
  }

  const stages = consumersFirstStages(graph, inScope);
  return { pipeline: manifest.pipeline, requested, scope: stages.flat(), stages, reasons };
}

/**
 * Stage of a unit = 0 when nothing in scope is downstream of it, else 1 + the highest stage of the in-scope units
 * downstream of it. "Downstream" looks through units left out of scope (`--no-cascade`): asked for raw and mart but
 * not staging, mart still goes before raw, since mart was built from raw's data.
 * Computed consumers-first (Kahn's algorithm), without recursion. The graph must be acyclic (checked by the caller).
 */
function consumersFirstStages(graph: DependencyGraph, scope: ReadonlySet<string>): string[][] {
  const below = nearestInScope(scope, graph.consumers);
  const above = nearestInScope(scope, graph.producers);
  const waitingOn = new Map<string, number>();
  const ready: string[] = [];
  for (const id of scope) {
    const count = below.get(id)!.length;
    waitingOn.set(id, count);
    if (count === 0) ready.push(id);
  }

  const stageOf = new Map<string, number>();
  for (let id = ready.pop(); id !== undefined; id = ready.pop()) {
    const consumerStages = below.get(id)!.map((c) => stageOf.get(c)!);
    stageOf.set(id, consumerStages.length === 0 ? 0 : 1 + Math.max(...consumerStages));
    for (const producer of above.get(id)!) {
      const left = waitingOn.get(producer)! - 1;
      waitingOn.set(producer, left);
      if (left === 0) ready.push(producer);
    }
  }

  const stages: string[][] = [];
  for (const [id, stage] of stageOf) (stages[stage] ??= []).push(id);
  return stages.map((stage) => stage.sort());
}

/**
 * For each unit in scope, the in-scope units reachable along `edges` (consumers or producers) through units out of
 * scope only: the nearest in-scope neighbours in that direction. With a scope closed downstream (cascade), these
 * are simply the direct in-scope consumers/producers.
 */
function nearestInScope(scope: ReadonlySet<string>, edges: ReadonlyMap<string, readonly string[]>): Map<string, string[]> {
  const nearest = new Map<string, string[]>();
  for (const id of scope) {
    const found: string[] = [];
    const visited = new Set<string>([id]);
    const queue = [...edges.get(id)!];
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      if (visited.has(next)) continue;
      visited.add(next);
      if (scope.has(next)) found.push(next);
      else queue.push(...edges.get(next)!);
    }
    nearest.set(id, found);
  }
  return nearest;
}
