"""What the API routes and the pages both show, computed once: timeline, evidence, trend, catalog,
evaluation reports, live board, quarantine, plausibility flags and charts. Imports neither routes nor pages."""
