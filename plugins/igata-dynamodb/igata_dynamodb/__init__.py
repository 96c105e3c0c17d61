"""igata-dynamodb: the DynamoDB REQUESTS/RESULTS sink for igata, idempotent.

Installed, it adds ``igata run --sink dynamodb`` (alias ``DynamodbOutputCtxManager``) and
``igata dynamodb create-tables``. See the package README for the table layout.
"""

from __future__ import annotations

__version__ = "0.1.0"
