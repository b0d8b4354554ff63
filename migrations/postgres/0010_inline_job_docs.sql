-- A job's document (~7 KB of JSON, ~3 KB compressed) is rewritten by every commit. Stored out of
-- line (TOAST, the default above ~2 KB) each rewrite inserts new chunks into the TOAST table and
-- its index and leaves the old ones dead; kept in the row, compressed, it is one tuple:
-- * rows are compressed down to 4 KB before any column is moved out of line;
-- * inserts fill pages to half, so a row's rewrite finds room on its own page (a HOT update:
--   no new index entries) once the page's dead versions are pruned.
ALTER TABLE jobs SET (toast_tuple_target = 4080, fillfactor = 50);
