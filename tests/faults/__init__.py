"""Fault tests: processes killed, services restarted, clocks jumping; compared with ground truth."""
