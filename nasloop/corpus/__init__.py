"""The seed corpus: record format and store, importers and the architecture grammar."""
