"""Signed webhooks: every matching event POSTed to an integrator's URL, at least once."""
