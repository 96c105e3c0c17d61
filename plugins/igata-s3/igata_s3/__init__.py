"""igata-s3: read inputs from S3 and write results to S3.

* loader ``s3``: resolves ``s3://bucket/key`` URIs for every source (SQS requests included);
* source ``s3`` (alias ``S3BucketImageInputCtxManager``): objects and prefixes, streamed;
* sinks ``s3-csv`` (alias ``S3BucketCsvFileOutputCtxManager``) and ``s3-jsonl``.
"""

__version__ = "0.1.0"
