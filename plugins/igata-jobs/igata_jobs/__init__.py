"""igata-jobs: batch jobs across a fleet of SQS workers.

``igata submit`` turns an S3 prefix, a list of URIs or a manifest into request messages,
``igata status`` reads a job's progress from the REQUESTS table and the queues, ``igata
export`` reads its RESULTS back out through the existing sinks.
"""

__version__ = "0.1.0"
