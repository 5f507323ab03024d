"""Route modules, one per resource; each is a thin shell over SQL or alerting.actions."""
