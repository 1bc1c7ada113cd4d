#!/usr/bin/env bash
# The test command (npm test): types, lint, every test against the real local services, and an offline synth
# with cdk-nag. Installs what is missing first (scripts/setup.sh is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"

echo "› typecheck"
tsc -p tsconfig.json
echo "› lint"
eslint .
echo "› tests (moto, PostgreSQL, the state machine definitions run with their handlers)"
mkdir -p .etl-rollback
status=0
vitest run --reporter=default --reporter=json --outputFile.json=.etl-rollback/test-results.json || status=$?
node -e '
  const r = require("./.etl-rollback/test-results.json");
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
[ "$status" -eq 0 ] || exit "$status"
echo "› cdk synth (offline, cdk-nag AwsSolutions)"
cdk synth --quiet
echo "› all checks passed"
