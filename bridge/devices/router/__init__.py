"""The router device kind: driver, config loader, emulator and capabilities in one folder."""
