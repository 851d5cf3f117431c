-- A finished build's step counts, so that a list of builds is read from D1 alone (the dashboard
-- asked each build's coordinator). NULL: not finished, or finished before this migration.
ALTER TABLE builds ADD COLUMN steps_total INTEGER;
ALTER TABLE builds ADD COLUMN steps_cached INTEGER;
