"""The awe web application (``awe serve``): DB viewer, object pages, validity editor, publishing.

See :func:`awe.web.app.create_app`. Starlette + Jinja2, HTMX vendored in ``static/`` (htmx.org 2.0.11, 0BSD
licence: ``static/htmx.LICENSE``), served by uvicorn.
"""

from awe.web.app import create_app, server_database

__all__ = ["create_app", "server_database"]
