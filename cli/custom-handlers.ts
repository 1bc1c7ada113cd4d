import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CustomInvoker } from '../core/adapters/custom.ts';
import { InputError } from '../core/errors.ts';
import type { Manifest } from '../core/manifest/schema.ts';
import type { HandlerInvoker } from '../core/runtime/custom-invoker.ts';

/**
 * How `--local` runs call `custom` units' handlers: a `module` handler is imported from its file (relative to the
 * manifest file's folder, TypeScript or JavaScript) and its export is called in this process with the request; its
 * return value is the answer and what it throws is its failure. A `lambdaArn` handler goes to `lambda` (the SDK
 * invoker, against AWS_ENDPOINT_URL or AWS). The stored manifest keeps the relative path, so the same manifest runs
 * from any checkout.
 */
export function localCustomInvoker(manifestDir: string, lambda: HandlerInvoker): CustomInvoker {
  return async (handler, request, timeoutSeconds) => {
    if ('lambdaArn' in handler) return lambda(handler, request, timeoutSeconds);
    const file = resolve(manifestDir, handler.module);
    if (!existsSync(file) || !statSync(file).isFile()) {
      throw new InputError(`handler module ${handler.module} not found: ${file} (the path is relative to the manifest file)`);
    }
    let loaded: Record<string, unknown>;
    try {
      loaded = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    } catch (error) {
      throw new InputError(`handler module ${handler.module} could not be loaded: ${(error as Error).message}`, { cause: error });
    }
    const fn = loaded[handler.export];
    if (typeof fn !== 'function') {
      const exported = Object.keys(loaded).filter((k) => typeof loaded[k] === 'function');
      throw new InputError(`handler module ${handler.module} has no exported function "${handler.export}" (its functions: ${exported.join(', ') || 'none'})`);
    }
    return (fn as (request: unknown) => unknown)(request);
  };
}

/**
 * A snapshot started in AWS (without --local) of a manifest whose `custom` units name `module` handlers would fail at
 * capture: refused here, before anything starts, naming the units.
 */
export function refuseModuleHandlers(manifest: Manifest): void {
  const local = manifest.units.flatMap((u) => (u.type === 'custom' && 'module' in u.handler ? [`${u.id} (${u.handler.module})`] : []));
  if (local.length > 0) {
    throw new InputError(`custom unit(s) ${local.join(', ')} name a module handler, which runs only with --local; in AWS give each "handler: { lambdaArn: … }"`);
  }
}
