"""Evaluation of generators: Inception features, FID/KID, k-NN and LSH precision/recall."""
