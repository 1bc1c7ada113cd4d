import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import { AwsSolutionsChecks, NagPack } from 'cdk-nag';
const cdkJson = JSON.parse(readFileSync('/work/main/cdk.json','utf8'));
const ctx: Record<string, unknown> = { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] };
if (process.argv[2] === 'data') Object.assign(ctx, { protectedBuckets: 'orders-data,arn:aws:s3:::marts', databaseSecretArns: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf' });
const app = new App({ outdir: '/tmp/nagprobe/out2', context: ctx });
const stack = buildEtlRollbackApp(app);
const proto = NagPack.prototype as unknown as { isAcknowledged: (n: { node: { path: string } }, id: string) => boolean };
const orig = proto.isAcknowledged;
const hits = new Map<string, string[]>();
proto.isAcknowledged = function (n, id) { const r = orig.call(this, n, id); if (r) { const l = hits.get(id) ?? []; l.push(n.node.path); hits.set(id, l);} return r; };
const report = new AwsSolutionsChecks().validateScope(stack);
console.log(JSON.stringify(report.violations.map(v => [v.ruleName, v.severity, v.violatingResources.map(r => r.constructPath)])));
let total = 0;
for (const [id, paths] of hits) { total += paths.length; console.log(id, paths.length, paths.slice(0, 3).join(' | ')); }
console.log('total acknowledged findings', total);
