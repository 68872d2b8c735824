"""The request's way: context, routing decision, admission, dispatch, streaming, accounting."""
