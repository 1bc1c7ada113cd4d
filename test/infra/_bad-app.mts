import { App } from 'aws-cdk-lib';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
const app = new App();
new Bucket(buildEtlRollbackApp(app), 'Unlogged');
app.synth();
