-- Reconciliation runs, findings and tickets (filled by the reconciliation engine).
SELECT 1;
