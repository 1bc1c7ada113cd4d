/**
 * What a copy-on-write table restore names when its undo log cannot be trusted (the triggers were bypassed): the
 * restore point that does not depend on them.
 */
export const BACKSTOP =
  "the backstop is the database's own restore point: the instance or cluster snapshot taken before the deploy (an rds-instance / rds-cluster unit of this pipeline) or a point-in-time restore to just before the deploy";
