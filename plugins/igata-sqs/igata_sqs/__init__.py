"""igata-sqs: SQS worker sources, the SQS sink and SNS completion notices for igata.

Installing the distribution registers (entry point ``igata``, module :mod:`igata_sqs.plugin`):

* source ``sqs`` (alias ``SQSMessageS3InputImageCtxManager``): image request messages;
* source ``sqs-csv`` (alias ``SQSMessageS3InputCSVCtxManager``): CSV file request messages;
* sink ``sqs`` (alias ``SQSRecordOutputCtxManager``): result records as SQS messages.
"""

__version__ = "0.1.0"
