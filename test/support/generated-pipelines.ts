import fc from 'fast-check';
import { validateManifest } from '../../core/manifest/load.ts';
import type { Manifest } from '../../core/manifest/schema.ts';

/**
 * Generated pipelines. Unit k may only depend on units generated before it, so the graph is acyclic; the manifest
 * then lists the units in a shuffled order, with shuffled ids, so that neither id order nor manifest order follows
 * the dependencies.
 */
export interface Pipeline {
  ids: string[];
  /** id → the ids it depends on (producers). */
  dependsOn: Map<string, string[]>;
  /** Manifest order: a permutation of ids. */
  order: string[];
}

export const unitId = fc.stringMatching(/^[a-z][a-z0-9]{0,4}$/);

export const acyclicPipeline: fc.Arbitrary<Pipeline> = fc.integer({ min: 1, max: 14 }).chain((size) =>
  fc
    .record({
      ids: fc.uniqueArray(unitId, { minLength: size, maxLength: size }),
      producers: fc.tuple(...Array.from({ length: size }, (_, k) => fc.subarray(Array.from({ length: k }, (_, j) => j)))),
      order: fc.shuffledSubarray(Array.from({ length: size }, (_, i) => i), { minLength: size, maxLength: size }),
    })
    .map(({ ids, producers, order }) => ({
      ids,
      dependsOn: new Map(ids.map((id, k) => [id, producers[k]!.map((j) => ids[j]!)])),
      order: order.map((i) => ids[i]!),
    })),
);

export function toManifest(p: Pipeline): Manifest {
  return validateManifest({
    pipeline: 'generated',
    units: p.order.map((id) => ({ id, type: 's3-prefix', bucket: 'orders-lake', prefix: `${id}/`, dependsOn: p.dependsOn.get(id) })),
  });
}
