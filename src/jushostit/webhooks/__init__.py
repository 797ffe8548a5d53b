"""Provider webhooks: an inbox that stores each event once and a worker that applies it."""
