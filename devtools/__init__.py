"""Tooling for developing and trying Proxima, never imported by a service.

* :mod:`devtools.localservers` starts nats-server, redis-server and a Kafka-protocol broker
  on free ports (tests, benches and the demo use them);
* :mod:`devtools.loggen` writes a realistic synthetic shop log;
* :mod:`devtools.demo` runs the whole product on this machine (``proxima demo``);
* ``devtools/storefront/`` is the demo shop page an edge serves at ``/demo/`` when asked to
  (``storefront_dir``).
"""
