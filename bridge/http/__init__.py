"""HTTP plumbing shared by the device emulators and the admin API."""
