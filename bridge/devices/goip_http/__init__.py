"""The goip_http device kind: driver, config loader, emulator and capabilities in one folder."""
