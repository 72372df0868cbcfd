"""The Celery app and its thin tasks: `celery -A tasks worker` (see tasks/app.py)."""

from tasks.app import app

__all__ = ["app"]
