"""The goip_udp device kind: driver, config loader, emulator and capabilities in one folder."""
