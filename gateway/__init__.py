"""The FHIR REST API one member org runs: HTTP routers, authentication, and the mapping of errors to HTTP."""
