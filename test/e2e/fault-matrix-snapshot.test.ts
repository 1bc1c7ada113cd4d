import { describe, it } from 'vitest';
import { MATRIX_TIMEOUT, registerFaultMatrix, snapshotMatrix } from '../support/fault-matrix.ts';

registerFaultMatrix();

describe('fault matrix: every write of a snapshot fails once', () => {
  it('before or after; a second snapshot of the deployment converges to a restore point that rolls back exactly', () => snapshotMatrix(), MATRIX_TIMEOUT);
});
