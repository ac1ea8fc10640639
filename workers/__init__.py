"""Celery workers: chain event listeners, claim adjudication, notifications."""
