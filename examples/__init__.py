"""Example predictors for igata and the demos (python -m examples.demo: the SQS -> DynamoDB
job on a local AWS; python -m examples.demo_local: local files)."""
