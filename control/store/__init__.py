"""State behind Protocols: calls, registrations, directory, CDR index, and blobs.

`sqlite` (embedded, one box) and `dynamodb` (aioboto3, many edges) implement the same Protocols,
as do the `local` and `s3` blob stores; one contract test suite runs against each of them.
"""
