"""Device drivers: one per kind of GSM hardware, all speaking the protocol in base.py."""
