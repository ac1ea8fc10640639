"""FHIR gateway: the REST API each member org runs (see issue: FHIR gateway)."""
