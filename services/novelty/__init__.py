"""The novelty service: MinHash fingerprints of candidate code and a per-namespace LSH index."""
