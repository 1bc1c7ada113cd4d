import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import { z } from 'zod';
import { InputError } from '../errors.ts';
import type { CustomHandlerRef } from '../manifest/schema.ts';

/**
 * Calls `custom` units' handlers that are Lambda functions, with the AWS SDK (core/adapters/custom.ts has the
 * contract). `Invoke` with `RequestResponse`: the answer is the function's return value. The client's own retry policy
 * covers throttling and service errors (the caller builds it with `maxAttempts`); the unit's `timeoutSeconds` bounds the
 * call (the request is aborted at the deadline). A function error (the handler threw, or ran out of time in Lambda)
 * is not retried: it is thrown as an Error carrying the handler's own message, which the adapter reports.
 *
 * A `module` handler cannot run here: modules are for the CLI's `--local` runs (cli/custom-handlers.ts).
 */
export type HandlerInvoker = (handler: CustomHandlerRef, request: unknown, timeoutSeconds: number) => Promise<unknown>;

const lambdaErrorSchema = z.object({ errorMessage: z.string().optional(), errorType: z.string().optional() });

export function lambdaInvoker(lambda: LambdaClient): HandlerInvoker {
  return async (handler, request, timeoutSeconds) => {
    if (!('lambdaArn' in handler)) {
      throw new InputError(
        `handler ${handler.module}#${handler.export} is a module: modules run only in local runs (--local); in AWS give the unit "handler: { lambdaArn: … }"`,
      );
    }
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: handler.lambdaArn, InvocationType: 'RequestResponse', Payload: new TextEncoder().encode(JSON.stringify(request)) }),
      { abortSignal: AbortSignal.timeout(timeoutSeconds * 1000) },
    );
    const text = out.Payload ? new TextDecoder().decode(out.Payload) : '';
    if (out.FunctionError) {
      let message = text;
      try {
        const parsed = lambdaErrorSchema.safeParse(JSON.parse(text));
        if (parsed.success && parsed.data.errorMessage) message = `${parsed.data.errorType ? `${parsed.data.errorType}: ` : ''}${parsed.data.errorMessage}`;
      } catch {
        /* not JSON: the text as it came */
      }
      throw new Error(message || `function error (${out.FunctionError}) without a message`);
    }
    if (text === '') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new Error(`its answer is not JSON: ${text.slice(0, 200)}`);
    }
  };
}
