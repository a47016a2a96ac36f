"""pipeline: Apache Beam jobs that turn audio corpora into prepared datasets, and the synthetic corpus."""
