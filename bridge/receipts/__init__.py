"""Receipts: device status -> receipt policy (policy.py), the outbox row format (payload.py),
and delivery of the outbox to ESMEs (delivery.py)."""
