"""Caption data: preprocessing, datasets and loaders."""
