"""The web console each member org's gateway serves under `/console`: its part of the consortium, read from the chain.

Server-rendered (Jinja2) pages with htmx for partial loads, paging and live blocks (server-sent events); Chart.js
for the claims charts. Same HTTPS port and the same org-scoped login as the API: a bearer token (in the header, or
given once on the login page and kept in an HttpOnly cookie) or the org's own TLS client certificate.
"""
