#!/usr/bin/env node
// etl-rollback CLI entry. Needs Node 22 or newer: when started by an older node, re-run with the project's pinned one.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  const pinned = resolve(root, 'node_modules/.bin/node');
  if (!existsSync(pinned)) {
    console.error(`etl-rollback needs Node 22 or newer (this is ${process.version}); run "npm install" in ${root} first`);
    process.exit(2);
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
// Everything the command does is done when main returns. Work still under way then was orphaned by a stopped run (a
// capture whose result nobody reads after Ctrl-C): it must not hold the terminal; the server rolls its transaction back.
setTimeout(() => process.exit(), 1000).unref();
