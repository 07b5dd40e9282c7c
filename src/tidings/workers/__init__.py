"""Workers (the outbox relay and the inbox consumer): loops around a testable run_once()."""
