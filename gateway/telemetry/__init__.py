"""Traces and metrics: an observer the request flow is handed."""
