"""docbatch benchmarks: scripts run by hand (`.venv/bin/python benchmarks/<name>.py --help`), not tests."""
