"""Export formats: the interface, the registry, staging and RLE, one module per format."""
