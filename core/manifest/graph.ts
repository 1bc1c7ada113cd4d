/**
 * The dependency graph of a pipeline's units, and the few algorithms the manifest check and the planner need.
 *
 * Direction: `dependsOn` points at producers. Data flows producer → consumer (raw → staging → mart), so
 * `consumers` are the units downstream of a unit, and `producers` the ones upstream.
 */

export interface GraphUnit {
  readonly id: string;
  readonly dependsOn: readonly string[];
}

export interface DependencyGraph {
  /** Unit ids, in the order given (manifest order); the first occurrence of a duplicated id wins. */
  readonly ids: readonly string[];
  /** id → the units it depends on (upstream), deduplicated, known ids only, in `dependsOn` order. */
  readonly producers: ReadonlyMap<string, readonly string[]>;
  /** id → the units that depend on it (downstream), in `ids` order. */
  readonly consumers: ReadonlyMap<string, readonly string[]>;
}

/**
 * Builds the graph. Entries of `dependsOn` naming no unit are left out (the manifest check reports them);
 * a unit naming itself keeps that edge, so that `findCycles` sees it.
 */
export function dependencyGraph(units: readonly GraphUnit[]): DependencyGraph {
  const ids: string[] = [];
  const producers = new Map<string, string[]>();
  const consumers = new Map<string, string[]>();
  for (const unit of units) {
    if (producers.has(unit.id)) continue;
    ids.push(unit.id);
    producers.set(unit.id, []);
    consumers.set(unit.id, []);
  }
  const seen = new Set<string>();
  for (const unit of units) {
    if (seen.has(unit.id)) continue;
    seen.add(unit.id);
    const own = producers.get(unit.id)!;
    for (const producer of unit.dependsOn) {
      if (!producers.has(producer) || own.includes(producer)) continue;
      own.push(producer);
    }
  }
  // Consumers in `ids` order, whatever order the dependsOn lists were in.
  for (const id of ids) {
    for (const producer of producers.get(id)!) consumers.get(producer)!.push(id);
  }
  return { ids, producers, consumers };
}

/**
 * The units downstream of `roots` (consumers, their consumers, ...), roots included.
 * Roots that are not in the graph are ignored; the caller validates them.
 */
export function downstreamClosure(graph: DependencyGraph, roots: Iterable<string>): Set<string> {
  const closure = new Set<string>();
  const queue: string[] = [];
  for (const root of roots) {
    if (graph.consumers.has(root) && !closure.has(root)) {
      closure.add(root);
      queue.push(root);
    }
  }
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const consumer of graph.consumers.get(next) ?? []) {
      if (closure.has(consumer)) continue;
      closure.add(consumer);
      queue.push(consumer);
    }
  }
  return closure;
}

/**
 * One cycle per strongly connected component that has one (a unit depending on itself included), in data-flow
 * order with the first unit repeated at the end: `[raw, staging, mart, raw]` means staging dependsOn raw, mart
 * dependsOn staging and raw dependsOn mart. Each cycle starts at the unit of its component that comes first in
 * `ids`, and is a shortest cycle through that unit, so messages are stable and short. Empty when the graph is a DAG.
 */
export function findCycles(graph: DependencyGraph): string[][] {
  const position = new Map(graph.ids.map((id, i) => [id, i]));
  const cycles: string[][] = [];
  for (const component of stronglyConnectedComponents(graph)) {
    const [first] = component;
    if (first === undefined) continue;
    if (component.length === 1 && !graph.producers.get(first)!.includes(first)) continue;
    const start = component.reduce((a, b) => (position.get(a)! <= position.get(b)! ? a : b));
    cycles.push(shortestCycleThrough(graph, start, new Set(component)));
  }
  return cycles.sort((a, b) => position.get(a[0]!)! - position.get(b[0]!)!);
}

/** Breadth-first search along consumer edges, inside one component, from `start` back to `start`. */
function shortestCycleThrough(graph: DependencyGraph, start: string, component: ReadonlySet<string>): string[] {
  const cameFrom = new Map<string, string>();
  const queue: string[] = [start];
  for (let node = queue.shift(); node !== undefined; node = queue.shift()) {
    for (const consumer of graph.consumers.get(node)!) {
      if (!component.has(consumer)) continue;
      if (consumer === start) {
        // Walk back from the closing edge to `start`; a unit depending on itself gives [start, start].
        const between: string[] = [];
        for (let at = node; at !== start; at = cameFrom.get(at)!) between.push(at);
        return [start, ...between.reverse(), start];
      }
      if (!cameFrom.has(consumer)) {
        cameFrom.set(consumer, node);
        queue.push(consumer);
      }
    }
  }
  // A strongly connected component with a cycle always leads back to its start.
  throw new Error(`internal error: no cycle through "${start}" in its component`);
}

/** Tarjan's algorithm, iterative so that a long chain of units cannot overflow the stack. */
function stronglyConnectedComponents(graph: DependencyGraph): string[][] {
  const index = new Map<string, number>();
  const lowLink = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let counter = 0;

  for (const root of graph.ids) {
    if (index.has(root)) continue;
    // Each frame: a node and how many of its consumers were visited so far.
    const frames: Array<{ node: string; next: number }> = [{ node: root, next: 0 }];
    index.set(root, counter);
    lowLink.set(root, counter);
    counter += 1;
    stack.push(root);
    onStack.add(root);

    while (frames.length > 0) {
      const frame = frames[frames.length - 1]!;
      const edges = graph.consumers.get(frame.node)!;
      if (frame.next < edges.length) {
        const to = edges[frame.next]!;
        frame.next += 1;
        if (!index.has(to)) {
          index.set(to, counter);
          lowLink.set(to, counter);
          counter += 1;
          stack.push(to);
          onStack.add(to);
          frames.push({ node: to, next: 0 });
        } else if (onStack.has(to)) {
          lowLink.set(frame.node, Math.min(lowLink.get(frame.node)!, index.get(to)!));
        }
        continue;
      }
      frames.pop();
      const parent = frames[frames.length - 1];
      if (parent) lowLink.set(parent.node, Math.min(lowLink.get(parent.node)!, lowLink.get(frame.node)!));
      if (lowLink.get(frame.node) === index.get(frame.node)) {
        const component: string[] = [];
        let member: string | undefined;
        do {
          member = stack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== frame.node);
        components.push(component);
      }
    }
  }
  return components;
}
