"""Evaluation harness: protocols of the medical-SAM2 studies, reference propagators, metrics and reports."""
