"""The web console: server-rendered pages for the person looking after a site (routes.py),
its login and sessions (auth.py), and what its pages show (views.py)."""
