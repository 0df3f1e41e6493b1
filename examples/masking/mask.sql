-- BetterPG masking example: run on a fresh copy of production before it becomes main.
-- Plain SQL (no psql meta-commands). It runs in one transaction: any error aborts the import or
-- refresh and leaves the old main as it was. After it, BetterPG recomputes statistics, rewrites
-- every table (VACUUM FULL) and resets the WAL, so no original value survives in any file.
--
-- Schema assumed: customers(id, email, full_name, phone, notes), a large object column
-- customers.photo (oid). Adapt the table and column names to yours.

-- Emails: unique and deterministic per row, on a domain that never delivers.
UPDATE customers SET email = 'user' || id || '@example.invalid';

-- Names: from a small list, chosen by id (realistic-looking, never the real one).
UPDATE customers SET full_name =
  (ARRAY['Alex Smith', 'Sam Jones', 'Kim Lee', 'Robin Brown', 'Jo Garcia', 'Chris Martin'])[1 + id % 6];

-- Phone numbers: keep the format, not the number (555-01xx is reserved for fiction).
UPDATE customers SET phone = '+1-555-01' || lpad((id % 100)::text, 2, '0') WHERE phone IS NOT NULL;

-- Free text: replaced (it may hold anything: addresses, card numbers, names).
UPDATE customers SET notes = CASE WHEN notes IS NULL THEN NULL ELSE 'note ' || id END;

-- Large objects: unlink the originals, keep none (or replace them with a placeholder).
SELECT lo_unlink(photo) FROM customers WHERE photo IS NOT NULL;
UPDATE customers SET photo = NULL;

-- Tables with nothing a branch needs: emptied.
TRUNCATE audit_log;
