-- The tables the API reads, as the provided dump declares them, so that a
-- dump of the same shape loads in place of the sample data. Constraints are
-- in constraints.sql and come after the rows, as pg_dump orders them:
-- checking them once over the loaded table is much faster than per row.

CREATE TABLE regions (
    slug text NOT NULL,
    name text NOT NULL,
    parent_slug text
);

CREATE TABLE ports (
    code text NOT NULL,
    name text NOT NULL,
    parent_slug text NOT NULL
);

CREATE TABLE prices (
    orig_code text NOT NULL,
    dest_code text NOT NULL,
    day date NOT NULL,
    price integer NOT NULL
);
