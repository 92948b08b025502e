"""Device emulators: real servers speaking each device kind's wire format, quirks included."""
