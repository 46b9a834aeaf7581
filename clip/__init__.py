"""Our own CLIP."""
