"""The /v1 REST API, one module per resource: read and check the request, call the domain
module of the same name (`services/gateway/<resource>.py`), return a `shared.schemas` model."""
