"""Front ends: trio I/O around the protocols (SMPP listener); no business rules."""
