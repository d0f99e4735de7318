"""The service's routers, one per concern; :func:`shopaug.serve.app.create_app` includes them.

Each route takes what it needs from :mod:`shopaug.serve.deps`, so tests can replace it with
``app.dependency_overrides``. Handlers that do CPU work or block on the database are plain
``def`` functions, which FastAPI runs in its thread pool.
"""
