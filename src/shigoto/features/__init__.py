"""Features: what a job can do beyond running once (unique, dependencies, batches, ...).

A feature plugs into the path every job already takes: inserting (checks and rows
written with the job, in the same statement or transaction: a unique key, a dependency's
`waiting` state, a batch's total), the finish path (what follows an outcome: releasing
dependants, closing a batch) or the claim (what may be claimed, decided in the claim's
SQL). It never carries a copy of one of them: a feature that acts on a job's end hooks
into the one finish path that the node, `drain_queue` and inline mode share, so it
behaves the same in all three.
"""
