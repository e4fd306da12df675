-- Make one job available now. A retry always allows at least one more run;
-- the error history is kept.
UPDATE __schema__.jobs
SET state = 'available', scheduled_at = now(),
    max_attempts = GREATEST(max_attempts, attempt + 1),
    completed_at = NULL, discarded_at = NULL, cancelled_at = NULL
WHERE id = %(id)s
  AND state IN ('scheduled', 'retryable', 'completed', 'discarded', 'cancelled')
RETURNING id
