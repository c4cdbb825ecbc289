"""Domain routers, discovered by ``api.app.router_modules``."""
