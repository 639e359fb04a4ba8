"""The conventional single-service implementation podcrew is compared with (see app.py)."""
