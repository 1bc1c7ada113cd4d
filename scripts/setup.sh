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
  if ! .venv/bin/pip install --disable-pip-version-check "moto[server]==${MOTO_VERSION}" > .venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    echo "setup: installing moto failed (full log: .venv/pip-install.log)" >&2
    exit 1
  fi
fi
.venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('s3-pit-restore') != '0.9')" 2>/dev/null || { echo "› installing s3-pit-restore==0.9 into .venv (bench)"; .venv/bin/pip install --disable-pip-version-check "s3-pit-restore==0.9" >> .venv/pip-install.log 2>&1 || { tail -n 30 .venv/pip-install.log >&2; echo "setup: installing s3-pit-restore failed (full log: .venv/pip-install.log)" >&2; exit 1; }; }
echo "› setup done: node $(node_modules/.bin/node --version), moto $(.venv/bin/python -c 'import moto; print(moto.__version__)')"
