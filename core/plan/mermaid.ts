import type { Manifest } from '../manifest/schema.ts';
import type { Plan } from './plan.ts';

/**
 * A plan as a picture: a Mermaid `flowchart` of the pipeline's units, one `subgraph` per stage in the order the
 * stages run, an arrow from each unit to each unit it depends on (its `dependsOn`: the direction the rollback goes,
 * consumers first, so arrows point down the stages), and each node labelled with its unit id and type. Units the plan leaves out (`--units`, `--no-cascade`) are drawn outside the stages, dashed.
 *
 * Unit ids come from manifests and may hold anything Mermaid reads as syntax, so nodes get generated ids (`u0`, `u1`,
 * ...) and labels are written as quoted strings in which every character outside a small safe set is an entity code
 * (`#34;` for `"`), which Mermaid turns back into the character.
 */

/** A label as Mermaid shows it verbatim: letters, digits and a few plain marks as they are, anything else as `#code;`. */
export function mermaidLabel(text: string): string {
  return [...text].map((c) => (/^[A-Za-z0-9 _.,/()-]$/.test(c) ? c : `#${c.codePointAt(0)};`)).join('');
}

export function planFlowchart(manifest: Manifest, plan: Plan): string {
  const nodeOf = new Map(manifest.units.map((u, i) => [u.id, `u${i}`]));
  const node = (u: Manifest['units'][number], dashed = false) => `${nodeOf.get(u.id)}["${mermaidLabel(u.id)}<br/>${mermaidLabel(u.type)}${dashed ? '<br/>(not rolled back)' : ''}"]`;
  const byId = new Map(manifest.units.map((u) => [u.id, u]));
  const lines = ['flowchart TB', '  %% stages run top to bottom; an arrow goes from a unit to a unit it depends on'];
  plan.stages.forEach((stage, i) => {
    lines.push(`  subgraph stage${i + 1}["stage ${i + 1}"]`);
    lines.push('    direction LR');
    for (const id of stage) lines.push(`    ${node(byId.get(id)!)}`);
    lines.push('  end');
  });
  const inScope = new Set(plan.scope);
  const outside = manifest.units.filter((u) => !inScope.has(u.id)).sort((a, b) => a.id.localeCompare(b.id));
  for (const u of outside) lines.push(`  ${node(u, true)}`);
  // Stages in order, top to bottom, even where no dependency links them (invisible links only place them).
  for (let i = 1; i < plan.stages.length; i++) lines.push(`  stage${i} ~~~ stage${i + 1}`);
  const units = [...manifest.units].sort((a, b) => a.id.localeCompare(b.id));
  for (const u of units) for (const producer of [...(u.dependsOn ?? [])].sort()) lines.push(`  ${nodeOf.get(u.id)} --> ${nodeOf.get(producer)}`);
  if (outside.length > 0) lines.push('  classDef outside stroke-dasharray: 4 3', `  class ${outside.map((u) => nodeOf.get(u.id)).join(',')} outside`);
  return lines.join('\n');
}
