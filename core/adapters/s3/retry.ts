/**
 * The adapter's retry policy. Two layers, each failure retried by exactly one of them:
 *
 * 1. Request-level failures (a 503 SlowDown, a 500/502/503/504, a throttling error, ECONNRESET, a socket or request
 *    timeout) are the AWS SDK's job. Its retry strategy (standard or adaptive, `maxAttempts` set by whoever builds the
 *    client: the Lambda handlers use 6, adaptive) backs off exponentially with full jitter, draws from a retry quota that
 *    stops retry storms, and in adaptive mode slows the whole client down when S3 throttles. The adapter does NOT wrap
 *    that loop in a second one: that would multiply attempts (6 × N per request) and defeat the quota.
 *    The one exception is a request the SDK tried only once (`$metadata.attempts` ≤ 1): a client built with
 *    `maxAttempts: 1`, or a retry quota already spent. Then no retry has happened, so the adapter makes its own (same
 *    backoff, below). A request the SDK already retried and gave up on fails the restore; a rerun resumes it without
 *    rewriting what was done (see the source-version marker in versioned.ts).
 * 2. Per-key failures inside a successful DeleteObjects response (`Errors: [{Key, Code: 'SlowDown'}]`, HTTP 200): the
 *    SDK sees a success and cannot retry them. The adapter resends only the failed keys whose code is retryable
 *    (SlowDown, InternalError, ServiceUnavailable, RequestTimeout, OperationAborted), with exponential backoff and full
 *    jitter, up to `maxAttempts`; any other code (AccessDenied, InvalidArgument, …) fails the restore naming each key.
 *
 * Backoff: before retry n (n = 1, 2, …) wait a uniformly random time in [0, min(maxDelayMs, baseDelayMs · 2^(n-1))]
 * ("full jitter", so that 16 concurrent copies throttled together do not come back together).
 */

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 6, baseDelayMs: 200, maxDelayMs: 20_000 };

/** DeleteObjects per-key error codes worth another attempt. */
export const RETRYABLE_KEY_CODES: ReadonlySet<string> = new Set(['SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout', 'OperationAborted']);

const THROTTLING_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
]);
const TRANSIENT_NAMES = new Set(['InternalError', 'ServiceUnavailable', 'RequestTimeout', 'RequestTimeoutException', 'TimeoutError', 'AbortError']);
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN']);

interface SdkLikeError {
  name?: unknown;
  code?: unknown;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $retryable?: unknown;
}

export function errorName(error: unknown): string | undefined {
  const name = (error as SdkLikeError | null)?.name;
  return typeof name === 'string' ? name : undefined;
}

export function httpStatus(error: unknown): number | undefined {
  return (error as SdkLikeError | null)?.$metadata?.httpStatusCode;
}

/** Throttling, a 5xx, or a transient network failure: the request may succeed if sent again. */
export function isRetryableError(error: unknown): boolean {
  const e = error as SdkLikeError | null;
  if (!e || typeof e !== 'object') return false;
  const name = errorName(e) ?? '';
  const status = httpStatus(e);
  return (
    e.$retryable !== undefined ||
    THROTTLING_NAMES.has(name) ||
    TRANSIENT_NAMES.has(name) ||
    (typeof e.code === 'string' && TRANSIENT_CODES.has(e.code)) ||
    status === 429 ||
    status === 500 ||
    status === 502 ||
    status === 503 ||
    status === 504
  );
}

/** How many attempts the SDK made before this error reached us (1 when it did not retry, or unknown). */
export function sdkAttempts(error: unknown): number {
  return (error as SdkLikeError | null)?.$metadata?.attempts ?? 1;
}

/** The full-jitter delay before retry `retry` (1-based). */
export function backoffDelay(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1)));
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends one request, retrying it only when it failed retryably AND the SDK did not retry it itself (layer 1 above).
 */
export async function sendOnce<T>(policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= policy.maxAttempts || !isRetryableError(error) || sdkAttempts(error) > 1) throw error;
      await sleep(backoffDelay(attempt, policy));
    }
  }
}
