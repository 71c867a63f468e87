"""The team set-up without Docker: PostgreSQL, SeaweedFS (S3), an MLflow tracking server, a Prefect server
with a process work pool and worker — real services on 127.0.0.1, state and logs under one folder."""
