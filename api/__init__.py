"""The HazWatch HTTP API: routes, auth (roles), live stream, metrics."""
