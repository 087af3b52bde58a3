"""The stages: one step of a job each, as plain functions that load the job by id, do the step
and name the next one (the app DB's store writes that message in the same transaction).

`enqueue` checks a request and creates the job; `fetch` plans the file into chunks;
`validate` checks one chunk; `insert` ends the job (publishing an atomic one); `replay`
plans a replay from stored rejects; `control` cancels and undoes; `feeds` runs feeds (SPEC 20);
`uploads` stores files handed to the service (SPEC 19); `cleanup` fails jobs and
deletes what they left; `webhooks` delivers the job's end; `pipeline` runs a stage with
what its errors do; `messages` names each actor's queue; `services` holds what every stage
gets and the actor names. Stages import formats, sources, storage, schema and the leaves,
never an edge or an actor.
"""
