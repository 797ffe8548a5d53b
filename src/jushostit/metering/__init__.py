"""Metering: usage collected from the runtimes (local processes, Prometheus, OpenCost), kept per window, summed
per account and day, priced by the plan, reported to Stripe for card accounts, and held against each account's
monthly budget."""
