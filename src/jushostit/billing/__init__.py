"""Billing facts: checkout through a payment provider, subscriptions and their periods."""
