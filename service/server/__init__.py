"""The process that runs the app: Gunicorn's Uvicorn worker and what it adds.

The app (service/main.py and the rest of service/) is an ASGI application
that knows nothing of sockets; this package is the server around it: the
worker (`worker.py`), the accept gate that takes a connection only into a
free request slot (`gate.py`), the probe port that only answers probes
(`probe_port.py`), the draining flag readiness reports (`lifecycle.py`), and
the master's metrics endpoint (`metrics_server.py`).
"""
