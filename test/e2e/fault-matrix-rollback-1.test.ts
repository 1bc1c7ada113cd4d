import { describe, it } from 'vitest';
import { MATRIX_TIMEOUT, registerFaultMatrix, rollbackMatrix } from '../support/fault-matrix.ts';

// The rollback fault matrix (test/support/fault-matrix.ts) in two files, so that its halves run side by side.
registerFaultMatrix();

describe('fault matrix: every write of a rollback fails once, before or after it is done; the next run converges and nothing is lost', () => {
  it('derived from a recorded run, every write point of part 1 of 2, each way in turn', () => rollbackMatrix(0, 2), MATRIX_TIMEOUT);
});
