"""End-to-end tests against real server processes."""
