import { describe, expect, it } from 'vitest';
import { dependencyGraph, downstreamClosure, findCycles, type GraphUnit } from '../../core/manifest/graph.ts';

/** `{ unit: [its producers] }` → graph units, in the order given. */
function units(dependsOn: Record<string, string[]>): GraphUnit[] {
  return Object.entries(dependsOn).map(([id, producers]) => ({ id, dependsOn: producers }));
}

describe('dependencyGraph', () => {
  it('records producers and consumers, ignoring unknown and repeated producers', () => {
    const graph = dependencyGraph(units({ raw: [], staging: ['raw', 'raw', 'ghost'], mart: ['staging', 'raw'] }));
    expect(graph.ids).toEqual(['raw', 'staging', 'mart']);
    expect(graph.producers.get('staging')).toEqual(['raw']);
    expect(graph.consumers.get('raw')).toEqual(['staging', 'mart']);
    expect(graph.consumers.get('mart')).toEqual([]);
  });
});

describe('downstreamClosure', () => {
  const graph = dependencyGraph(units({ raw: [], staging: ['raw'], mart: ['staging'], side: [] }));

  it.each([
    { roots: ['raw'], expected: ['mart', 'raw', 'staging'] },
    { roots: ['staging'], expected: ['mart', 'staging'] },
    { roots: ['mart', 'side'], expected: ['mart', 'side'] },
    { roots: [], expected: [] },
  ])('from $roots reaches $expected', ({ roots, expected }) => {
    expect([...downstreamClosure(graph, roots)].sort()).toEqual(expected);
  });
});

describe('findCycles', () => {
  it.each<{ name: string; graph: Record<string, string[]>; expected: string[][] }>([
    { name: 'none in a DAG', graph: { raw: [], staging: ['raw'], mart: ['staging', 'raw'] }, expected: [] },
    { name: 'a unit depending on itself', graph: { raw: ['raw'] }, expected: [['raw', 'raw']] },
    { name: 'two units depending on each other', graph: { a: ['b'], b: ['a'] }, expected: [['a', 'b', 'a']] },
    {
      name: 'a three-unit cycle in data-flow order, starting at the first unit in the manifest',
      graph: { raw: ['mart'], staging: ['raw'], mart: ['staging'] },
      expected: [['raw', 'staging', 'mart', 'raw']],
    },
    {
      name: 'the shortest cycle through the first unit when a component holds several',
      graph: { a: ['c', 'b'], b: ['a'], c: ['b'] },
      expected: [['a', 'b', 'a']],
    },
    {
      name: 'one cycle per separate component, in manifest order',
      graph: { x: ['y'], y: ['x'], ok: [], a: ['b'], b: ['c'], c: ['a'] },
      expected: [
        ['x', 'y', 'x'],
        ['a', 'c', 'b', 'a'],
      ],
    },
  ])('finds $name', ({ graph, expected }) => {
    expect(findCycles(dependencyGraph(units(graph)))).toEqual(expected);
  });

  it('handles a chain of 20,000 units without running out of stack', () => {
    const chain = Array.from({ length: 20_000 }, (_, i) => ({ id: `u${i}`, dependsOn: i === 0 ? ['u19999'] : [`u${i - 1}`] }));
    const [cycle] = findCycles(dependencyGraph(chain));
    expect(cycle).toHaveLength(20_001);
    expect(cycle!.slice(0, 3)).toEqual(['u0', 'u1', 'u2']);
  });
});
