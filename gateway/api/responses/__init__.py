"""OpenAI's Responses API (``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``)
over the same flow as chat: the edge (:mod:`gateway.api.generation`) reads, authorises and
decodes the request; :mod:`.translate` turns its input items (and a stored conversation,
for ``previous_response_id``) into a :class:`gateway.backend.GenerationRequest`;
:mod:`.create` calls the :class:`gateway.flow.service.Service` and answers with a
``Response`` or :mod:`.events`' event stream; :mod:`.store` keeps responses for a bounded
time (SQLite in the data directory, or Redis); :mod:`.routes` serves the stored ones.
:mod:`.protocol` holds the wire types."""
