#!/usr/bin/env bash
# The test command (npm test): types, lint, every test against the real local services, and an offline synth
# with cdk-nag. Installs what is missing first (scripts/setup.sh is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"

# Types, lint and the offline synth with cdk-nag are independent: run side by side (each mostly on one core), each
# printing its output when it ends; any failure stops here.
echo "› typecheck, lint and cdk synth (offline, cdk-nag AwsSolutions), side by side"
mkdir -p .etl-rollback
checks_failed=0
tsc -p tsconfig.json > .etl-rollback/typecheck.log 2>&1 & tsc_pid=$!
eslint . > .etl-rollback/lint.log 2>&1 & lint_pid=$!
cdk synth --quiet > .etl-rollback/synth.log 2>&1 & synth_pid=$!
for check in typecheck:$tsc_pid lint:$lint_pid synth:$synth_pid; do
  name=${check%%:*}
  if wait "${check##*:}"; then echo "› $name passed"; else echo "› $name FAILED"; checks_failed=1; fi
  cat ".etl-rollback/$name.log"
done
[ "$checks_failed" -eq 0 ] || exit 1
echo "› tests (moto, PostgreSQL, the state machine definitions run with their handlers)"
status=0
vitest run --reporter=default --reporter=json --outputFile.json=.etl-rollback/test-results.json || status=$?
node -e '
  const r = require("./.etl-rollback/test-results.json");
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
[ "$status" -eq 0 ] || exit "$status"
echo "› all checks passed"
