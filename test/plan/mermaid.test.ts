import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../core/manifest/load.ts';
import { mermaidLabel, planFlowchart } from '../../core/plan/mermaid.ts';
import { planRollback } from '../../core/plan/plan.ts';
import { acyclicPipeline, toManifest } from '../support/generated-pipelines.ts';

/** What a flowchart says, read back from its text: nodes (id → label), edges, and subgraphs in order with their nodes. */
function readFlowchart(text: string) {
  const nodes = new Map<string, string>();
  const defined: string[] = [];
  const edges: [string, string][] = [];
  const subgraphs: { name: string; nodes: string[] }[] = [];
  let current: { name: string; nodes: string[] } | undefined;
  for (const line of text.split('\n').slice(1)) {
    const t = line.trim();
    let m: RegExpMatchArray | null;
    if ((m = /^subgraph (\w+)\["[^"]*"\]$/.exec(t))) subgraphs.push((current = { name: m[1]!, nodes: [] }));
    else if (t === 'end') current = undefined;
    else if ((m = /^(u\d+)\["([^"]*)"\]$/.exec(t))) {
      defined.push(m[1]!);
      nodes.set(m[1]!, m[2]!);
      current?.nodes.push(m[1]!);
    } else if ((m = /^(u\d+) --> (u\d+)$/.exec(t))) edges.push([m[1]!, m[2]!]);
  }
  return { nodes, defined, edges, subgraphs };
}

describe('mermaid labels', () => {
  const cases: [string, string, string][] = [
    ['plain id stays as it is', 'staging', 'staging'],
    ['dots, dashes and slashes stay', 'raw/orders-2026.csv', 'raw/orders-2026.csv'],
    ['a double quote would end the label', 'say "hi"', 'say #34;hi#34;'],
    ['brackets would end the node shape', 'a[1]', 'a#91;1#93;'],
    ['a hash would start an entity', 'a#b', 'a#35;b'],
    ['a semicolon would end the statement', 'a;b', 'a#59;b'],
    ['html is shown, not rendered', '<b>&', '#60;b#62;#38;'],
    ['a pipe would start an edge label', 'a|b', 'a#124;b'],
    ['non-ASCII by code point', 'Orders ü', 'Orders #252;'],
    ['a newline would end the line', 'a\nb', 'a#10;b'],
  ];
  it.each(cases)('%s', (_, text, expected) => {
    expect(mermaidLabel(text)).toBe(expected);
  });

  it('never leaves a character that Mermaid reads as syntax, for any text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        expect(mermaidLabel(text)).toMatch(/^(?:[A-Za-z0-9 _.,/()-]|#\d+;)*$/);
      }),
    );
  });
});

describe('plan flowchart', () => {
  it('draws the orders pipeline: mart, then staging, then raw, each pointing at what it depends on', () => {
    const manifest = validateManifest({
      pipeline: 'orders',
      connections: { warehouse: { engine: 'postgres', url: 'postgres://localhost/orders' } },
      units: [
        { id: 'raw', type: 's3-prefix', bucket: 'lake', prefix: 'raw/' },
        { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'] },
        { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily_orders', dependsOn: ['staging'] },
      ],
    });
    const text = planFlowchart(manifest, planRollback(manifest));
    expect(text.split('\n')[0]).toBe('flowchart TB');
    const chart = readFlowchart(text);
    expect(chart.subgraphs.map((s) => s.nodes.map((n) => chart.nodes.get(n)))).toEqual([
      ['mart<br/>postgres-table'],
      ['staging<br/>postgres-table'],
      ['raw<br/>s3-prefix'],
    ]);
    expect(chart.edges).toEqual([
      ['u2', 'u1'],
      ['u1', 'u0'],
    ]);
  });

  it('draws units left out of the plan outside the stages, dashed', () => {
    const manifest = validateManifest({
      pipeline: 'orders',
      units: [
        { id: 'raw', type: 's3-prefix', bucket: 'lake', prefix: 'raw/' },
        { id: 'curated', type: 's3-prefix', bucket: 'lake', prefix: 'curated/', dependsOn: ['raw'] },
      ],
    });
    const text = planFlowchart(manifest, planRollback(manifest, { units: ['raw'], cascade: false }));
    expect(text).toContain('u1["curated<br/>s3-prefix<br/>(not rolled back)"]');
    expect(text).toContain('class u1 outside');
    expect(readFlowchart(text).subgraphs).toEqual([{ name: 'stage1', nodes: ['u0'] }]);
  });

  it('on generated pipelines: every unit once, every dependency as one edge, the stages in the order they run', () => {
    fc.assert(
      fc.property(
        acyclicPipeline.chain((p) => fc.record({ p: fc.constant(p), units: fc.subarray(p.ids), cascade: fc.boolean() })),
        ({ p, units, cascade }) => {
          const manifest = toManifest(p);
          const plan = planRollback(manifest, { units, cascade });
          const chart = readFlowchart(planFlowchart(manifest, plan));
          const idOf = new Map([...chart.nodes].map(([node, label]) => [node, label.split('<br/>')[0]!]));
          // Every unit of the manifest is defined exactly once, labelled with its id and type.
          expect(chart.defined.map((n) => idOf.get(n)).sort()).toEqual([...p.ids].sort());
          expect(new Set(chart.defined).size).toBe(chart.defined.length);
          for (const label of chart.nodes.values()) expect(label.split('<br/>')[1]).toBe('s3-prefix');
          // Every dependsOn is one edge from the unit to its producer, and there are no others.
          const expected = p.ids.flatMap((id) => p.dependsOn.get(id)!.map((producer) => `${id}->${producer}`)).sort();
          expect(chart.edges.map(([a, b]) => `${idOf.get(a)}->${idOf.get(b)}`).sort()).toEqual(expected);
          // One subgraph per stage, in order, holding exactly that stage's units.
          expect(chart.subgraphs.map((s) => s.name)).toEqual(plan.stages.map((_, i) => `stage${i + 1}`));
          expect(chart.subgraphs.map((s) => s.nodes.map((n) => idOf.get(n)))).toEqual(plan.stages);
        },
      ),
    );
  });
});
