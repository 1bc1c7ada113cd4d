import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManifestError } from '../../core/errors.ts';
import { planRollback, type Plan } from '../../core/plan/plan.ts';
import { acyclicPipeline, toManifest, type Pipeline } from '../support/generated-pipelines.ts';

/** Every unit downstream of `id` (its consumers, their consumers, ...), by a plain fixed point: the reference. */
function downstreamOf(p: Pipeline, id: string): Set<string> {
  const found = new Set<string>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [consumer, producers] of p.dependsOn) {
      if (!found.has(consumer) && producers.some((producer) => producer === id || found.has(producer))) {
        found.add(consumer);
        grew = true;
      }
    }
  }
  return found;
}

const pipelineWithRequest = acyclicPipeline.chain((p) => fc.record({ p: fc.constant(p), units: fc.subarray(p.ids), cascade: fc.boolean() }));

function stageIndex(plan: Plan): Map<string, number> {
  return new Map(plan.stages.flatMap((stage, i) => stage.map((id): [string, number] => [id, i])));
}

describe('planRollback on generated pipelines', () => {
  it('puts every in-scope unit after everything in scope downstream of it, so each stage is an independent set', () => {
    fc.assert(
      fc.property(pipelineWithRequest, ({ p, units, cascade }) => {
        const plan = planRollback(toManifest(p), { units, cascade });
        const stageOf = stageIndex(plan);
        for (const producer of plan.scope) {
          for (const consumer of downstreamOf(p, producer)) {
            if (stageOf.has(consumer)) expect(stageOf.get(producer)!).toBeGreaterThan(stageOf.get(consumer)!);
          }
        }
        // Direct edges inside one stage are the special case of the above, checked plainly as well.
        for (const stage of plan.stages) {
          for (const id of stage) expect(p.dependsOn.get(id)!.filter((producer) => stage.includes(producer))).toEqual([]);
        }
      }),
    );
  });

  it('gives each unit the stage its longest chain of in-scope consumers calls for, with no empty stage', () => {
    fc.assert(
      fc.property(pipelineWithRequest, ({ p, units, cascade }) => {
        const plan = planRollback(toManifest(p), { units, cascade });
        const stageOf = stageIndex(plan);
        for (const id of plan.scope) {
          const below = [...downstreamOf(p, id)].filter((c) => stageOf.has(c)).map((c) => stageOf.get(c)!);
          expect(stageOf.get(id)).toBe(below.length === 0 ? 0 : 1 + Math.max(...below));
        }
        for (const stage of plan.stages) {
          expect(stage.length).toBeGreaterThan(0);
          expect(stage).toEqual([...stage].sort());
        }
        expect(plan.scope).toEqual(plan.stages.flat());
        expect(new Set(plan.scope).size).toBe(plan.scope.length);
      }),
    );
  });

  it('with cascade, scope is exactly the request plus everything downstream of it', () => {
    fc.assert(
      fc.property(pipelineWithRequest, ({ p, units }) => {
        const plan = planRollback(toManifest(p), { units });
        const requested = units.length > 0 ? units : p.ids;
        const expected = new Set(requested.flatMap((id) => [id, ...downstreamOf(p, id)]));
        expect([...plan.scope].sort()).toEqual([...expected].sort());
        for (const id of plan.scope) {
          const inScopeProducers = p.dependsOn.get(id)!.filter((producer) => expected.has(producer)).sort();
          expect(plan.reasons[id]).toBe(requested.includes(id) ? 'requested' : `downstream of ${inScopeProducers.join(', ')}`);
        }
      }),
    );
  });

  it('without cascade, scope is exactly the request', () => {
    fc.assert(
      fc.property(pipelineWithRequest, ({ p, units }) => {
        const plan = planRollback(toManifest(p), { units, cascade: false });
        const requested = [...new Set(units.length > 0 ? units : p.ids)].sort();
        expect(plan.requested).toEqual(requested);
        expect([...plan.scope].sort()).toEqual(requested);
        expect(Object.values(plan.reasons).every((reason) => reason === 'requested')).toBe(true);
      }),
    );
  });

  it('is deterministic, whatever the order of units, of dependsOn entries and of the request', () => {
    fc.assert(
      fc.property(
        pipelineWithRequest.chain(({ p, units, cascade }) =>
          fc.record({
            p: fc.constant(p),
            units: fc.constant(units),
            cascade: fc.constant(cascade),
            reordered: fc.shuffledSubarray(p.order, { minLength: p.order.length, maxLength: p.order.length }),
            reversedDeps: fc.boolean(),
            requestOrder: fc.shuffledSubarray(units, { minLength: units.length, maxLength: units.length }),
          }),
        ),
        ({ p, units, cascade, reordered, reversedDeps, requestOrder }) => {
          const first = planRollback(toManifest(p), { units, cascade });
          expect(planRollback(toManifest(p), { units, cascade })).toEqual(first);
          const shuffled: Pipeline = {
            ...p,
            order: reordered,
            dependsOn: new Map([...p.dependsOn].map(([id, producers]) => [id, reversedDeps ? [...producers].reverse() : producers])),
          };
          expect(planRollback(toManifest(shuffled), { units: requestOrder, cascade })).toEqual(first);
        },
      ),
    );
  });
});

describe('validateManifest on generated pipelines', () => {
  it('accepts every acyclic pipeline', () => {
    fc.assert(
      fc.property(acyclicPipeline, (p) => {
        expect(() => toManifest(p)).not.toThrow();
      }),
    );
  });

  it('rejects every pipeline with a cycle, naming units that really form one', () => {
    const cyclicPipeline = acyclicPipeline
      .filter((p) => p.ids.length >= 2)
      .chain((p) => fc.record({ p: fc.constant(p), loop: fc.shuffledSubarray(p.ids, { minLength: 2 }) }))
      .map(({ p, loop }) => {
        // Close a loop: loop[i + 1] dependsOn loop[i], and loop[0] dependsOn the last, added where not already there.
        const dependsOn = new Map([...p.dependsOn].map(([id, producers]) => [id, [...producers]]));
        loop.forEach((producer, i) => {
          const consumer = loop[(i + 1) % loop.length]!;
          const producers = dependsOn.get(consumer)!;
          if (!producers.includes(producer)) producers.push(producer);
        });
        return { ...p, dependsOn };
      });

    fc.assert(
      fc.property(cyclicPipeline, (p) => {
        let error: unknown;
        try {
          toManifest(p);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(ManifestError);
        const issues = (error as ManifestError).issues;
        // Nothing else is wrong with these manifests: every issue is a cycle.
        expect(issues.length).toBeGreaterThan(0);
        for (const issue of issues) {
          const named = /^dependency cycle: (.+?) \(/.exec(issue.message)?.[1]?.split(' -> ');
          expect(named, issue.message).toBeDefined();
          const cycle = named!;
          expect(cycle.length).toBeGreaterThanOrEqual(3);
          expect(cycle[cycle.length - 1]).toBe(cycle[0]);
          expect(new Set(cycle.slice(0, -1)).size).toBe(cycle.length - 1);
          // Each unit feeds the next: the next one depends on it.
          for (let i = 0; i + 1 < cycle.length; i++) expect(p.dependsOn.get(cycle[i + 1]!)).toContain(cycle[i]);
          // The path points at the dependsOn entry closing the cycle, on the cycle's first unit.
          const index = p.order.indexOf(cycle[0]!);
          const entry = p.dependsOn.get(cycle[0]!)!.indexOf(cycle[cycle.length - 2]!);
          expect(issue.path).toBe(`units[${index}].dependsOn[${entry}]`);
        }
      }),
    );
  });
});
