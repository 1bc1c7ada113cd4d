import { z } from 'zod';
import { liftFreezes, liftFreezesAfterFailure } from '../core/workflow/freeze.ts';
import { runIds, taskHandler } from './task.ts';

/**
 * "Lift write freezes" (success: a freeze left in place fails the run) and "Lift write freezes after failure"
 * (`afterFailure: true`: never throws for a freeze, so the run's own error stays the one reported).
 */
export const handler = taskHandler('lift-freezes', runIds.extend({ afterFailure: z.boolean().optional() }), (deps, input) =>
  input.afterFailure ? liftFreezesAfterFailure(deps, input) : liftFreezes(deps, input),
);
