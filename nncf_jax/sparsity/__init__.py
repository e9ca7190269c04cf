"""Sparsity algorithms: magnitude, const (and the RB loss function)."""
