"""Corpus loading, validation and tokenization. Imports neither Ray, Prefect nor MLflow."""
