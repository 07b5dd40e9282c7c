"""Workers (relay, consumer, projector, saga recovery): loops around a testable run_once()."""
