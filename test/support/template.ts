import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';

/** What the template tests share: an app with the project's cdk.json context and no bundling, and small readers. */

export type Json = Record<string, unknown>;

const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Json };

/** An app with cdk.json's context, `context` on top, and no bundling (the templates are read, never deployed). */
export const testApp = (context: Json = {}): App => new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], ...context } });

/** A template field that is one value or a list, as a list (absent: empty). */
export const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** The logical id of a construct's CloudFormation resource in its stack. */
export function logicalId(construct: IConstruct): string {
  const child = construct.node.defaultChild ?? construct;
  return Stack.of(construct).resolve((child as unknown as { logicalId: string }).logicalId) as string;
}
