-- compose.yaml: the postgres image creates the `genops` role and the mlflow database; Prefect gets its own.
CREATE DATABASE prefect OWNER genops;
