-- Scheduled job runs and alert bookkeeping.
SELECT 1;
