import { describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';

/** `plan` offline, in each of its formats, on the example manifest. */
async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

describe('etl-rollback plan --format', () => {
  it('mermaid: a flowchart with one subgraph per stage, in order', async () => {
    const r = await cli('plan', 'examples/orders.yaml', '--format', 'mermaid');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('flowchart TB');
    expect(lines.filter((l) => l.trim().startsWith('subgraph')).map((l) => l.trim())).toEqual([
      'subgraph stage1["stage 1"]',
      'subgraph stage2["stage 2"]',
      'subgraph stage3["stage 3"]',
    ]);
  });

  it('json and --json print the same plan; text is the default', async () => {
    const json = await cli('plan', 'examples/orders.yaml', '--format', 'json');
    expect(JSON.parse(json.stdout).stages).toEqual([['mart'], ['staging'], ['raw']]);
    expect((await cli('plan', 'examples/orders.yaml', '--json')).stdout).toBe(json.stdout);
    const text = (await cli('plan', 'examples/orders.yaml')).stdout;
    expect(text).toContain('stage 1:');
    // Each table unit says how its restore point will be taken (the example sets no capture: chosen by size).
    expect(text).toContain('capture: chosen at snapshot by the table\'s size: copy-on-write at 1.0 GiB or more when it can protect the table, else copy');
  });

  it('refuses a format it does not know with exit 2, naming the choices', async () => {
    const r = await cli('plan', 'examples/orders.yaml', '--format', 'svg');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Allowed choices are text, json, mermaid');
  });
});
