#!/usr/bin/env bash
# One-time (and idempotent) setup: Node dependencies and the pinned moto server in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION="5.2.5"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "› installing Node dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c "import moto, sys; sys.exit(0 if moto.__version__ == '${MOTO_VERSION}' else 1)" 2>/dev/null; then
  echo "› installing moto[server]==${MOTO_VERSION} into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi
echo "› setup done: node $(node_modules/.bin/node --version), moto $(.venv/bin/python -c 'import moto; print(moto.__version__)')"
