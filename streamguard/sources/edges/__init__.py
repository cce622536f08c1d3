"""The asyncio edges of the sources: sockets and devices in, a core's events into a ``CallFeed``.

One edge per transport: ``websocket.py`` (a path on the daemon's port, any WebSocket core),
``tcp.py`` (AudioSocket), ``udp.py`` (RTP and RTCP), ``mic.py`` (a sound device),
``kvs_reader.py`` (GetMedia from Kinesis Video Streams), ``audiohook_ws.py`` (AudioHook's
connection handler; its handshake check is the front door's, ``server/feed_checks.py``). The
cores (``streamguard/sources/*.py``) never import an edge; the mapping of a core's refusal kind
to a WebSocket close code lives in ``websocket.py`` only.
"""
