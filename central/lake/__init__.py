"""The event lake: every event in Parquet under a lake root, partitioned by event date.

:mod:`central.lake.schema` fixes the columns (the event contract, versioned) and
:mod:`central.lake.layout` where files live; writers, the importer and the readers build
on those two.
"""
