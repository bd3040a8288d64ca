"""Use cases of the demand service, one module per subject.

They take a session, change state and add outbox events; they never commit and
never see HTTP types. Queries are in :mod:`services.demand.repository` and
:mod:`services.demand.pipeline.storage`; who may do what is :mod:`services.demand.access`.
"""
