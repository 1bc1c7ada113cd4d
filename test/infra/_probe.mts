import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import { buildEtlRollbackApp } from '/work/main/infra/etl-rollback-app.ts';
import { AwsSolutionsChecks } from 'cdk-nag';
const cdkJson = JSON.parse(readFileSync('/work/main/cdk.json','utf8'));
const app = new App({ outdir: '/tmp/nagprobe/out', context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], protectedBuckets: 'orders-data,arn:aws:s3:::marts', databaseSecretArns: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf' } });
const stack = buildEtlRollbackApp(app);
const report = new AwsSolutionsChecks().validateScope(stack);
console.log(JSON.stringify(report, null, 1).slice(0, 8000));
if (process.argv[2] === 'bad') new Bucket(stack, 'Bad');
const t0 = Date.now();
try { app.synth(); console.log('synth ok', Date.now()-t0); } catch (e) { console.log('synth threw:', String(e).slice(0, 3000)); }
