-- Keys of the tables in schema.sql, added after their rows are loaded.

ALTER TABLE ONLY regions ADD CONSTRAINT regions_pkey PRIMARY KEY (slug);
ALTER TABLE ONLY ports ADD CONSTRAINT ports_pkey PRIMARY KEY (code);
ALTER TABLE ONLY regions
    ADD CONSTRAINT regions_parent_slug_fkey FOREIGN KEY (parent_slug) REFERENCES regions (slug);
ALTER TABLE ONLY ports
    ADD CONSTRAINT ports_parent_slug_fkey FOREIGN KEY (parent_slug) REFERENCES regions (slug);
ALTER TABLE ONLY prices
    ADD CONSTRAINT prices_orig_code_fkey FOREIGN KEY (orig_code) REFERENCES ports (code);
ALTER TABLE ONLY prices
    ADD CONSTRAINT prices_dest_code_fkey FOREIGN KEY (dest_code) REFERENCES ports (code);
