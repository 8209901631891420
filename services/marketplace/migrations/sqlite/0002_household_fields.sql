-- The partner protocol's household fields (all optional, so nullable: rows stored before this
-- migration, and records sent without the fields, hold NULL and compare as before).

-- The partner's key of the household that sold the line (distinct households trading).
ALTER TABLE sales_records ADD COLUMN household_ref TEXT;

-- Products the household has listed now, and whether it has a digital address (0/1).
ALTER TABLE households ADD COLUMN listed_products BIGINT;
ALTER TABLE households ADD COLUMN has_digital_address INTEGER;
