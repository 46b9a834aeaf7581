"""Training: losses, optimisers and the Lightning module."""
