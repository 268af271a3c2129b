"""Training from the event lake, out of core: candidate tables and example sampling as
queries on an engine (DuckDB embedded, or Spark), the replay through the featurize seam
in parallel, then the trainer's fit and export."""
