"""A custodian's FHIR records: validation, the encrypted store, the write path to the ledger, sharing."""
