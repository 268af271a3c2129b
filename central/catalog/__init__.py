"""The catalog, centrally: the live item state in the ``proxima-catalog`` KV bucket, the HTTP
API and signed webhook that feed it, and the store the command line writes through."""
