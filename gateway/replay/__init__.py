"""``freshet replay``: a trace through candidate fleets in simulated time, with the live
router, cost model, usage records and reports; only the backends' timing is simulated
(each backend type's simulator, ``register_simulators``). See ``docs/planning.md``."""
