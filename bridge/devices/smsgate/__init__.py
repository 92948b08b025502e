"""The smsgate device kind: driver, config loader, emulator and capabilities in one folder."""
