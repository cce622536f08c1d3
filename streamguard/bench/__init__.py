"""``streamguard bench``: how fast the detector is, and how many live calls one daemon carries.

Two suites, each a small module:

- :mod:`~streamguard.bench.model_bench`: detector throughput per batch size (windows/s,
  ms/batch, median and p95) and the real-time capacity it implies;
- :mod:`~streamguard.bench.daemon_bench`: a real daemon on loopback, fed N concurrent calls
  through the real WebSocket feed by a separate load-generator process
  (:mod:`~streamguard.bench.loadgen`), measured end to end (lag from window end to score event,
  drops, batch sizes, CPU, RSS).

Figures are printed (:mod:`~streamguard.bench.report`), never asserted: they depend on the
machine and on whatever else runs on it.
"""
