"""Freshet: an LLM serving gateway that routes on knowledge freshness and cost."""

from gateway.hookspecs import hookimpl

__all__ = ["hookimpl"]
