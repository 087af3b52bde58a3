"""The schema: products (schemas/*.json) and what they decide about a record: header mapping
and aliases, coercion of text cells (`coerce`), validation and the sentences that explain
a failure, and which keys a rejected row keeps (`kept_keys`). Pure logic: it imports only
the leaves (errors), no database, file or network.
"""
