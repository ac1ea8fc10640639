"""The gateway's HTTP routes, one module per part of the API. `gateway.app` includes them in this order, specific
paths before the generic `/fhir/{rtype}` ones."""
