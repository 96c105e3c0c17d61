"""Reading a collection from the REQUESTS table's ``collection_id-state-index``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from igata_jobs.aws import dynamodb_failure

INDEX = "collection_id-state-index"


def index_name(layout: Any) -> str:
    from igata_dynamodb.tables import index_name as name

    return name("collection_id", layout.state_key)


def query_pages(
    client: Any,
    layout: Any,
    collection_id: str,
    state: str | None,
    *,
    select: str | None = None,
    projection: list[str] | None = None,
    since: int | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Pages of a Query of one collection (and state) through the index."""
    names = {"#c": "collection_id"}
    values: dict[str, Any] = {":c": {"S": collection_id}}
    condition = "#c = :c"
    if state is not None:
        names["#s"] = layout.state_key
        values[":s"] = {"S": state}
        condition += " AND #s = :s"
    request: dict[str, Any] = {
        "TableName": layout.requests_table,
        "IndexName": index_name(layout),
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    if select:
        request["Select"] = select
    if projection:
        for number, attribute in enumerate(projection):
            names[f"#p{number}"] = attribute
        request["ProjectionExpression"] = ", ".join(f"#p{n}" for n in range(len(projection)))
    if since is not None:
        names["#u"] = "updated_at_timestamp"
        values[":t"] = {"N": str(since)}
        request["FilterExpression"] = "#u >= :t"
    if limit:
        request["Limit"] = limit
    seen = 0
    while True:
        try:
            page = client.query(**request)
        except Exception as exc:
            raise dynamodb_failure(
                exc,
                role="REQUESTS",
                table=layout.requests_table,
                action="Query",
                client=client,
                layout=layout,
            ) from exc
        yield page
        seen += page.get("Count", 0)
        start = page.get("LastEvaluatedKey")
        if not start or (limit and seen >= limit):
            return
        request["ExclusiveStartKey"] = start


_deserializer: Any = None
_number: Any = None


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as Python values (numbers as Decimal, as boto3's TypeDeserializer
    gives them). Strings and numbers, nearly every attribute, are converted inline; the
    other types go through the TypeDeserializer (a method lookup per value)."""
    global _deserializer, _number
    if _deserializer is None:
        from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer

        _number = DYNAMODB_CONTEXT.create_decimal
        _deserializer = TypeDeserializer()
    out: dict[str, Any] = {}
    for key, value in item.items():
        if len(value) == 1:
            if "S" in value:
                out[key] = value["S"]
                continue
            if "N" in value:
                out[key] = _number(value["N"])
                continue
        out[key] = _deserializer.deserialize(value)
    return out
