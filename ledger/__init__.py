"""CareLedger's contracts as typed calls, and their refusals as exceptions (one place for both)."""
