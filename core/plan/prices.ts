import { z } from 'zod';
import { InputError } from '../errors.ts';
import pricesFile from './prices.json' with { type: 'json' };

/**
 * The AWS list prices an estimate is priced with. They live in one data file, prices.json, with the date they were
 * read and the pages they were read from; updating a price is an edit of that file only.
 */
const price = z.number().nonnegative().finite();
const retrievalPrice = z.strictObject({ perGb: price, perThousandRequests: price });

const regionPricesSchema = z.strictObject({
  s3: z.strictObject({ tier1PerThousand: price, tier2PerThousand: price }),
  lambda: z.strictObject({ perMillionRequests: price, perGbSecond: price }),
  stepFunctions: z.strictObject({ perThousandTransitions: price }),
  dynamodb: z.strictObject({ perMillionWriteUnits: price }),
  /** Retrievals of archived objects (RestoreObject); optional: a region without them is priced with the fallback's. */
  s3ArchiveRetrieval: z
    .strictObject({
      glacierFlexible: z.strictObject({ Expedited: retrievalPrice, Standard: retrievalPrice, Bulk: retrievalPrice }),
      deepArchive: z.strictObject({ Standard: retrievalPrice, Bulk: retrievalPrice }),
    })
    .optional(),
});

export const priceTableSchema = z
  .strictObject({
    currency: z.literal('USD'),
    asOf: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date (YYYY-MM-DD)'),
    sources: z.strictObject({ s3: z.url(), lambda: z.url(), stepFunctions: z.url(), dynamodb: z.url() }),
    notes: z.array(z.string()),
    fallbackRegion: z.string().min(1),
    regions: z.record(z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region name'), regionPricesSchema),
  })
  .refine((t) => t.fallbackRegion in t.regions, { message: 'fallbackRegion must be one of the regions' });

export type PriceTable = z.infer<typeof priceTableSchema>;
export type RegionPrices = z.infer<typeof regionPricesSchema>;

/** Validates a price table (the file, or one a test builds); InputError naming every problem. */
export function parsePriceTable(raw: unknown, source = 'price table'): PriceTable {
  const parsed = priceTableSchema.safeParse(raw);
  if (!parsed.success) throw new InputError(`${source} is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** The price table shipped with the project (core/plan/prices.json). */
export const PRICES: PriceTable = parsePriceTable(pricesFile, 'core/plan/prices.json');

/** The prices of one region, as an estimate uses them: which region was asked, which one priced it, and why. */
export interface PricesFor {
  requestedRegion: string;
  /** The region whose prices were used: the requested one, or the table's fallback when it has no prices for it. */
  pricedRegion: string;
  /** Set when the fallback was used: say so in the output. */
  note?: string;
  asOf: string;
  sources: PriceTable['sources'];
  prices: RegionPrices;
}

export function pricesFor(region: string, table: PriceTable = PRICES): PricesFor {
  const own = table.regions[region];
  const pricedRegion = own ? region : table.fallbackRegion;
  return {
    requestedRegion: region,
    pricedRegion,
    ...(own ? {} : { note: `no prices for ${region || '(no region)'} in the price table; priced with ${table.fallbackRegion}` }),
    asOf: table.asOf,
    sources: table.sources,
    prices: table.regions[pricedRegion]!,
  };
}

export type ArchiveRetrievalPrices = NonNullable<RegionPrices['s3ArchiveRetrieval']>;

/**
 * The archive retrieval prices for a region: its own, else the fallback region's (`pricedRegion` says which), else none.
 */
export function archiveRetrievalPricesFor(region: string, table: PriceTable = PRICES): { pricedRegion: string; asOf: string; prices: ArchiveRetrievalPrices } | undefined {
  for (const r of [region, table.fallbackRegion]) {
    const prices = table.regions[r]?.s3ArchiveRetrieval;
    if (prices) return { pricedRegion: r, asOf: table.asOf, prices };
  }
  return undefined;
}
