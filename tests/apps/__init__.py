"""Small programs the subprocess tests run (each also runs standalone), plus the shared `harness`."""
