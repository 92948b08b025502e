"""The SMPP front end: protocol.py decides (sans-IO), listener.py does the trio I/O."""
