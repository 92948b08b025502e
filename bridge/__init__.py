"""smpp-bridge: an SMPP 3.4 server in front of local GSM hardware."""

__version__ = "0.1.0"
