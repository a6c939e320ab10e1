-- Run by rates-seed after the data, inside the same transaction.

-- Serves the API's only query: equality on both codes, a range on day.
-- INCLUDE (price) lets PostgreSQL answer from the index alone once the
-- table has been vacuumed.
CREATE INDEX IF NOT EXISTS prices_orig_code_dest_code_day_idx
    ON prices (orig_code, dest_code, day) INCLUDE (price);

-- Regions are walked from parent to child on every request.
CREATE INDEX IF NOT EXISTS regions_parent_slug_idx ON regions (parent_slug);
CREATE INDEX IF NOT EXISTS ports_parent_slug_idx ON ports (parent_slug);

ANALYZE regions;
ANALYZE ports;
ANALYZE prices;

-- Tells running services that the data changed: they drop the answers they keep
-- (rates/cache.py AnswerCache). A notification is delivered only when the load's
-- transaction commits, and never when it rolls back.
NOTIFY rates_data;
