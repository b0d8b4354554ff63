-- Ends the statement that calls it with SQLSTATE AP001 and `reason`: a create that would pass its
-- tenant's limits is one statement (insert the job, then count it only within the limits), and this
-- is how that statement undoes its own insert when the count refuses it.
CREATE FUNCTION aiprod_refuse(reason text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'AP001', MESSAGE = reason;
END
$$;
