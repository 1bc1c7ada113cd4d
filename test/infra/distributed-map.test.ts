import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { HANDLERS, taskStates } from '../../cli/local-runner.ts';
import { HANDLER_SPECS, PROJECT_ROOT } from '../../infra/constructs/handlers.ts';
import { composeDefinition } from '../../infra/constructs/workflow.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import { STATE_MACHINE_FILES } from '../../infra/stack.ts';

type Json = Record<string, unknown>;
const CHILD_FILE = join(PROJECT_ROOT, 'statemachines', 'restore-shards.asl.json');
const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Json };

function synth() {
  const app = new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] } });
  const stack = buildEtlRollbackApp(app);
  return { stack, template: Template.fromStack(stack) };
}

const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

describe('rollback: restore shards through a Distributed Map', () => {
  const { stack, template } = synth();
  const resources = template.toJSON().Resources as Record<string, { Type: string; Properties: Json }>;
  const machineId = Stack.of(stack).resolve((stack.rollback.stateMachine.node.defaultChild as unknown as { logicalId: string }).logicalId) as string;
  const machine = resources[machineId]!.Properties;
  const definition = JSON.parse(machine.DefinitionString as string) as { States: Record<string, Json> };

  it('the "Restore shards" Map is DISTRIBUTED, batched and bounded, and its processor is restore-shards.asl.json composed in', () => {
    const map = definition.States['Restore shards']!;
    const child = JSON.parse(readFileSync(CHILD_FILE, 'utf8')) as Json;
    expect(map.Type).toBe('Map');
    expect(map.ItemProcessor).toEqual({ ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' }, StartAt: child.StartAt, States: child.States });
    expect(map.ItemBatcher).toMatchObject({ MaxItemsPerBatch: 4, BatchInput: { 'runId.$': '$.runId', 'stage.$': '$.current.stage.index' } });
    expect(map.MaxConcurrency).toBe(10);
    expect(map.ItemsPath).toBe('$.current.shardWork.items');
    expect(map.Next).toBe('Record shard restores');
    expect(definition.States['Restore stage']!.Next).toBe('Collect shards');
    expect(definition.States['Shards to restore?']).toMatchObject({
      Choices: [{ Variable: '$.current.shardWork.count', NumericGreaterThan: 0, Next: 'Restore shards' }],
      Default: 'Verify stage',
    });
    expect(definition.States['Record shard restores']!.Next).toBe('Verify stage');
    // The child's Task and "Record shard restores" invoke the restore-shard function.
    const restoreShard = HANDLER_SPECS.find((s) => s.name === 'restore-shard')!;
    expect((machine.DefinitionSubstitutions as Json)[restoreShard.substitution]).toBeDefined();
    expect(taskStates(definition as never).filter((t) => t.substitution === 'RestoreShard').map((t) => t.state).sort()).toEqual([
      'Collect shards',
      'Record shard restores',
      'Restore shard',
    ]);
  });

  it('composition leaves definitions without a DefinitionFile byte for byte', () => {
    const text = readFileSync(STATE_MACHINE_FILES.snapshot, 'utf8');
    expect(composeDefinition(text, STATE_MACHINE_FILES.snapshot)).toEqual({ definition: text, distributed: false });
  });

  it('the machine has a fixed name; its role may start executions of itself and describe/stop only its own child executions', () => {
    expect(machine.StateMachineName).toBe(`${stack.stackName}-rollback`);
    const roleId = Stack.of(stack).resolve((stack.rollback.stateMachine.role.node.defaultChild as unknown as { logicalId: string }).logicalId) as string;
    const statements = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy' && (r.Properties.Roles as { Ref: string }[]).some((x) => x.Ref === roleId))
      .flatMap((r) => (r.Properties.PolicyDocument as { Statement: { Sid?: string; Action: string | string[]; Resource: unknown }[] }).Statement);
    const states = statements.filter((s) => asArray(s.Action).some((a) => a.startsWith('states:')));
    const flat = (r: unknown) => JSON.stringify(Stack.of(stack).resolve(r));
    expect(states.map((s) => [s.Sid, asArray(s.Action).sort()])).toEqual([
      ['DistributedMapStart', ['states:StartExecution']],
      ['DistributedMapChildren', ['states:DescribeExecution', 'states:StopExecution']],
    ]);
    expect(flat(states[0]!.Resource)).toContain(`:stateMachine:${stack.stackName}-rollback"`);
    expect(flat(states[1]!.Resource)).toContain(`:execution:${stack.stackName}-rollback/*"`);
    // No reference to the machine itself (that would be a circular dependency): the ARNs are built from the name.
    expect(flat(states)).not.toContain(machineId);
    // The snapshot machine has no Distributed Map: no states actions, no fixed name.
    const snapshotId = Stack.of(stack).resolve((stack.snapshot.stateMachine.node.defaultChild as unknown as { logicalId: string }).logicalId) as string;
    expect(resources[snapshotId]!.Properties.StateMachineName).toBeUndefined();
  });

  it('the local runner serves every Task of the child file, and the new handler is registered', () => {
    const child = JSON.parse(readFileSync(CHILD_FILE, 'utf8')) as never;
    for (const t of taskStates(child)) expect(HANDLERS[t.substitution], t.state).toBeDefined();
    expect(HANDLERS.RestoreShard).toBeDefined();
  });
});
