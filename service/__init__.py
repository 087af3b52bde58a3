"""The import service. Its packages are layers, and imports run one way (SPEC 21; `make lint`
checks it with the import-linter contracts in pyproject.toml):

    rest.py grpc_server.py cli.py   entry points SPEC 9 names; each imports only its edge
    edges/     REST, gRPC, importctl: translate requests and errors, call a stage
    (actors/)  the Dramatiq actors: load a job by id, run one stage
    stages/    one step of a job each: enqueue, fetch, validate, insert, replay, cancel/undo...
    formats/   bytes in, records out: csv, tsv, kv, xlsx, jsonl
    sources/   blob URI -> confined, pinned, ranged reader: file://, s3://
    storage/   the only SQL: app DB (jobs, chunks, queue) and customer DBs
    schema/    products: header mapping, coercion, validation, explanation
    config.py logs.py hosts.py units.py errors.py   leaves every layer may use

A module may import from its own package and from any layer below it, never above, and no
two modules import each other.
"""
