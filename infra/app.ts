import { App } from 'aws-cdk-lib';
import { buildEtlRollbackApp } from './etl-rollback-app.ts';

// cdk.json: "app": "npx tsx infra/app.ts". Context: -c protectedBuckets=a,b -c databaseSecretArns=arn:… -c stackName=…
const app = new App();
buildEtlRollbackApp(app);
app.synth();
