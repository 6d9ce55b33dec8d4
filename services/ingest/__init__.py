"""ingest: the FHIR REST facade; every write commits its change event with it (outbox)."""
