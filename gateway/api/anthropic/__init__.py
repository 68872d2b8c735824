"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``) over
the same flow as chat: the edge (:mod:`gateway.api.generation`) reads, authorises and
decodes the request; :mod:`.messages` turns it into a :class:`gateway.backend.GenerationRequest`
and calls the :class:`gateway.flow.service.Service`; :mod:`.events` writes Anthropic's
event stream; :mod:`.errors` answers in Anthropic's error shape. :mod:`.protocol` holds
the wire types."""
