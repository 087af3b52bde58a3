"""The sources: a blob URI becomes a confined, pinned, ranged reader of the customer's file.

`blob` parses a URI, confines it to the customer's area and dispatches to the store
(`file://` here, `s3://` in `s3`, `az://` in `azure`, `gs://` in `gcs`, `https://` and
`http://` in `http`) through the same calls: locate, check, pin, open_blob, streamed, upload.
`ranged` holds what the remote stores share: the reader whose reads are ranged requests pinned
to one version, given one `fetch(start, length)` per store (an https server without ranges
gives a forward-only reader instead: `blob.streamed`). A new store (uploads) is one module
here behind those calls, with its URI scheme added to `blob`. `prefixes` lists the folder or
prefix a feed watches, `parts` holds the bytes of uploads arriving into the blob root. Sources import only the
leaves (config, errors, logs, hosts, units): never a stage, a format, the schema or the
databases.
"""
