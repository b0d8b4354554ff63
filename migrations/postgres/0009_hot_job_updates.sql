-- A job's row is rewritten by every commit. An update that changes no indexed column can be a
-- heap-only tuple (HOT: no new entry in any of the table's indexes) when its page has room:
-- * runnable jobs are taken oldest first by creation, not by last update, so `updated_at` (which
--   every commit changes) is no longer indexed;
-- * `jobs_by_state` is not used by any query (claims use `jobs_runnable`, a tenant's jobs
--   `jobs_by_tenant_state`), and cost an index entry per update;
-- * pages are filled to 80 % by inserts, leaving room for the rewrites of their rows.
DROP INDEX jobs_by_state;
DROP INDEX jobs_runnable;
CREATE INDEX jobs_runnable ON jobs (created_at)
    WHERE state IN ('QUEUED', 'PLANNING', 'RENDERING', 'QUALITY_CHECK');
ALTER TABLE jobs SET (fillfactor = 80);
