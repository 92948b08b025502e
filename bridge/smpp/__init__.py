"""Sans-IO SMPP 3.4: bytes and PDUs only; no sockets, no trio."""
