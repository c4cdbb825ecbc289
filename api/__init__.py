"""HTTP layer: app factory, authentication, rate limits, errors, routers, CLI."""
