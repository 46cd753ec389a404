"""The hub application: configuration, authentication, access and room policy."""
