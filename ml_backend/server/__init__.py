"""The HTTP server Label Studio talks to: clicks, sessions, prefetch, first-frame previews."""
