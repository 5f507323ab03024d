"""Route modules, one per resource; each is a thin shell over SQL or alerting.actions.

Each router carries its full path prefix (not a prefix added when it is included), so that a
route's `path` is the whole template, which is what metrics label requests with.
"""

API_PREFIX = "/api/v1"
