"""The credits ledger: grants with priority and expiry, append-only entries, debits, refunds, plan credits."""
