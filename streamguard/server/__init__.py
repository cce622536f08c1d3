"""The front door: everything on the daemon's one HTTP/WebSocket port before a handler runs.

Owns routing (:mod:`~streamguard.server.router`: WebSocket paths, plain HTTP routes,
``process_request`` with its Host/Origin/method/duplicate-header checks), access and tokens
(:mod:`~streamguard.server.access`), the feeds' own handshake checks (Twilio's signature,
AudioHook's API key and HTTP message signature: :mod:`~streamguard.server.feed_checks`),
``/healthz`` and ``/metrics`` (:mod:`~streamguard.server.health`), the dashboard's files
(:mod:`~streamguard.server.dashboard`), the ``/api/*`` route table
(:mod:`~streamguard.server.api`, JSON bodies included, read by
:mod:`~streamguard.server.handshake`), TLS (:mod:`~streamguard.server.tls`) and the HTTP helpers
(:mod:`~streamguard.server.httputil`). The handlers behind it (the ``/alerts`` subscription, the
feeds) live with their layers; the daemon wires them in.
"""
