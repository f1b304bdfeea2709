"""Export formats: the interface, the registry, masks and staging, one module per format."""
