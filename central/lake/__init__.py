"""The event lake: every event in Parquet under a lake root, partitioned by event date.

:mod:`central.lake.schema` fixes the columns (the event contract, versioned) and
:mod:`central.lake.layout` where files live; :mod:`central.lake.names` what a file's name
says (the source partition and offsets it covers, and which files a compacted one
supersedes). Writing: :mod:`central.lake.commit` makes several files visible at once,
:mod:`central.lake.writer` (with :mod:`central.lake.buffer`) writes the Kafka topic into
the lake exactly once, resuming from :mod:`central.lake.offsets`, and
:mod:`central.lake.importer` loads a log file; :mod:`central.lake.maintenance` applies
retention and compacts small files. Reading: :mod:`central.lake.tables` (checked files)
and :mod:`central.lake.stats`.
"""
