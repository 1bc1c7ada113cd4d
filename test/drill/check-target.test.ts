import { describe, expect, it } from 'vitest';
import { pointCheckAt } from '../../core/adapters/drill/check-target.ts';

const SCRATCH = '"etl_rollback_drill_0a1b2c3d"."staging"';

describe('pointing a user check at the drill scratch copy', () => {
  it.each([
    ['SELECT count(*) = 500 FROM staging.orders', 'SELECT count(*) = 500 FROM "etl_rollback_drill_0a1b2c3d"."staging"'],
    ['select bool_and(o.amount >= 0) from STAGING.ORDERS o', 'select bool_and(o.amount >= 0) from "etl_rollback_drill_0a1b2c3d"."staging" o'],
    ['SELECT 1 FROM "staging"."orders" AS x JOIN staging.orders y ON x.id = y.id', `SELECT 1 FROM ${SCRATCH} AS x JOIN ${SCRATCH} y ON x.id = y.id`],
    ['SELECT count(*) > 0 FROM ONLY staging.orders', `SELECT count(*) > 0 FROM ONLY ${SCRATCH}`],
    ['SELECT NOT EXISTS (SELECT 1 FROM staging.orders WHERE amount < 0)', `SELECT NOT EXISTS (SELECT 1 FROM ${SCRATCH} WHERE amount < 0)`],
  ])('rewrites %j', (sql, expected) => {
    expect(pointCheckAt(sql, 'staging.orders', SCRATCH, '"', 'public')).toEqual({ sql: expected });
  });

  it('resolves an unqualified unit table, also written with its default schema', () => {
    expect(pointCheckAt('SELECT count(*) FROM public.orders', 'orders', SCRATCH, '"', 'public')).toEqual({ sql: `SELECT count(*) FROM ${SCRATCH}` });
    expect(pointCheckAt('SELECT count(*) FROM orders', 'orders', SCRATCH, '"', 'public')).toEqual({ sql: `SELECT count(*) FROM ${SCRATCH}` });
    // A neighbour whose name starts the same is another table.
    expect(pointCheckAt('SELECT count(*) FROM orders_archive', 'orders', SCRATCH, '"', 'public')).toHaveProperty('reason');
  });

  it('quoted names in both engines', () => {
    expect(pointCheckAt('SELECT 1 FROM "Sales Data"."Orders ü"', '"Sales Data"."Orders ü"', SCRATCH, '"')).toEqual({ sql: `SELECT 1 FROM ${SCRATCH}` });
    expect(pointCheckAt('SELECT COUNT(*) FROM `shop db`.`cart lines`', '`shop db`.`cart lines`', '`d`.`carts`', '`')).toEqual({ sql: 'SELECT COUNT(*) FROM `d`.`carts`' });
  });

  it.each([
    ['SELECT (SELECT sum(orders) FROM mart.daily_orders) = (SELECT count(*) FROM staging.orders)', /also reads mart\.daily_orders/],
    ['SELECT count(*) FROM staging.orders o, mart.daily_orders m', /joins other relations with a comma/],
    ['SELECT max(staging.orders.id) FROM staging.orders', /names staging\.orders outside FROM\/JOIN/],
    ['SELECT now() > now() - interval \'1 day\'', /does not read staging\.orders/],
  ])('refuses to point %j, saying why (it is reported, never run on production)', (sql, why) => {
    const pointed = pointCheckAt(sql, 'staging.orders', SCRATCH, '"', 'public');
    expect(pointed).toHaveProperty('reason');
    expect((pointed as { reason: string }).reason).toMatch(why);
  });
});
