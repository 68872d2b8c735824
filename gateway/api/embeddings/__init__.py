"""OpenAI's embeddings API (``POST /v1/embeddings``) over the same flow as chat: the edge
(:mod:`gateway.api.generation`) reads, authorises and decodes the request; :mod:`.handler`
checks ``input``, calls :meth:`gateway.flow.service.Service.embed` and encodes the vectors;
:mod:`.protocol` holds the wire types. Backends serve it through the optional
:class:`gateway.backend.Embedder` protocol."""
