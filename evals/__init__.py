"""Measurement harnesses. Each prints its figures; none is a test."""
