"""Storage: the only SQL. `db` opens connections (app DB, customer DBs, the embedded server).
The app DB's store is `jobs.JobStore`, built from `app_db` (connections, transactions and
the queue messages each state change writes in its own transaction), `turns` (fair chunk
turns, publish order), `chunks` (plans, chunk and stage attempts) and `controls` (cancel,
undo); `job` holds its values and `views` what every layer shows of a job; `queue` is
Dramatiq's wire format. `customer_db` and `store` hold a customer database's rows, history,
staging tables and `rejects`. Queries live in `sql/*.sql`. Storage imports only the schema
(product names) and the leaves.
"""
