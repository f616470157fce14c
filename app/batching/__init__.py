"""Dynamic batching: the policy that picks batches, the batcher that runs them, their stats."""
