import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { freezeSid, freezeStatement, withFreeze, withoutFreeze, type BucketPolicy } from '../../../core/adapters/freeze/s3.ts';

/**
 * For every bucket policy (any statements, any Sids or none, run ids of any characters): freezing then lifting gives the
 * policy back as it was (an empty one: deleted); freezing twice changes nothing the second time; two runs' or two
 * units' freezes never remove each other's statement; statements added while frozen survive the lift.
 */
const statement = fc.record(
  { Sid: fc.option(fc.stringMatching(/^[A-Za-z0-9]{1,12}$/), { nil: undefined }), Effect: fc.constantFrom('Allow', 'Deny'), Action: fc.constantFrom('s3:GetObject', 's3:DeleteBucket'), Resource: fc.constant('arn:aws:s3:::b/*') },
  { requiredKeys: ['Effect', 'Action', 'Resource'] },
);
const policy = fc.option(fc.record({ Version: fc.constant('2012-10-17'), Statement: fc.array(statement, { maxLength: 5 }) }), { nil: undefined });
const runId = fc.string({ minLength: 1, maxLength: 80 });
const principals = ['arn:aws:iam::123456789012:role/restore'];
const ours = (run: string, unit = 'raw') => freezeStatement({ bucket: 'b', prefix: 'in/', sid: freezeSid(run, unit), principals });
const norm = (p: BucketPolicy | 'empty' | 'unchanged' | undefined, before: BucketPolicy | undefined) =>
  p === 'empty' ? undefined : p === 'unchanged' ? before : p;

describe('bucket policy freeze statement', () => {
  it('freeze then lift gives the policy back; a policy that had no statements is deleted', () => {
    fc.assert(
      fc.property(policy, runId, (before, run) => {
        const frozen = withFreeze(before, ours(run))!;
        expect(frozen.Statement.at(-1)).toEqual(ours(run));
        const lifted = withoutFreeze(frozen, freezeSid(run, 'raw'));
        if (!before || before.Statement.length === 0) expect(lifted).toBe('empty');
        else expect(lifted).toEqual(before);
      }),
    );
  });

  it('freezing again changes nothing; lifting again changes nothing', () => {
    fc.assert(
      fc.property(policy, runId, (before, run) => {
        const frozen = withFreeze(before, ours(run))!;
        expect(withFreeze(frozen, ours(run))).toBeUndefined();
        const lifted = norm(withoutFreeze(frozen, freezeSid(run, 'raw')), frozen);
        expect(withoutFreeze(lifted, freezeSid(run, 'raw'))).toBe('unchanged');
      }),
    );
  });

  it('another run or unit keeps its statement, and statements added meanwhile survive the lift', () => {
    fc.assert(
      fc.property(policy, runId, runId, fc.array(statement, { maxLength: 3 }), (before, a, b, added) => {
        fc.pre(a !== b);
        const bothFrozen = withFreeze(withFreeze(before, ours(a))!, ours(b, 'mart'))!;
        const edited = { ...bothFrozen, Statement: [...bothFrozen.Statement, ...added] };
        const lifted = withoutFreeze(edited, freezeSid(a, 'raw'));
        expect(lifted).not.toBe('unchanged');
        expect(lifted).not.toBe('empty');
        expect((lifted as BucketPolicy).Statement).toEqual([...(before?.Statement ?? []), ours(b, 'mart'), ...added]);
      }),
    );
  });

  it('Sids are letters and digits, and differ between runs and units', () => {
    fc.assert(
      fc.property(runId, runId, (a, b) => {
        expect(freezeSid(a, 'raw')).toMatch(/^EtlRollbackFreeze[A-Za-z0-9]+$/);
        if (a !== b) expect(freezeSid(a, 'raw')).not.toBe(freezeSid(b, 'raw'));
        expect(freezeSid(a, 'raw')).not.toBe(freezeSid(a, 'mart'));
      }),
    );
  });
});
