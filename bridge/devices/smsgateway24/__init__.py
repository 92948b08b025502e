"""The smsgateway24 device kind: driver, config loader, emulator and capabilities in one folder."""
