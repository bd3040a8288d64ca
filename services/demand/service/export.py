"""The OCDS export: the public open lines, and the awarded ones with their award, as a release
package streamed page by page."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from services.demand import ocds, repository
from services.demand.repository import LineFilters
from services.demand.settings import DemandSettings
from shared.db import Database, utcnow
from shared.problems import not_found

log = logging.getLogger("seedbed.demand.export")


async def ocds_package(
    database: Database, filters: LineFilters, settings: DemandSettings, page: int = 500
) -> AsyncIterator[bytes]:
    """The release package of the public open lines and awarded lines, streamed page by page."""
    head, tail = ocds.package_parts(
        uri=settings.ocds_package_base_uri, publisher=settings.ocds_publisher_name, published=utcnow()
    )
    yield head.encode()
    conditions = repository.exported_lines() + filters.conditions()
    known: dict[str, Any] = {}
    after: tuple[datetime, str] | None = None
    first = True
    while True:
        async with database.transaction(write=False) as session:
            rows = await repository.line_page(session, conditions, after=after, limit=page)
            missing = {r["anchor_id"] for r in rows} - known.keys()
            if missing:
                known.update(await repository.anchors_by_id(session, missing))
            awarded = await repository.awards_of(session, [r["id"] for r in rows if r["status"] == "awarded"])
        parts = []
        for line in rows:
            try:
                release = ocds.release_from_line(
                    line, known[line["anchor_id"]], settings.ocds_ocid_prefix, awarded.get(line["id"])
                )
            except (ValueError, OverflowError) as exc:
                # One line that cannot be expressed must not break the export for everyone.
                log.warning(
                    "demand line left out of the OCDS export",
                    extra={"line_id": line["id"], "error": str(exc)},
                )
                continue
            parts.append(("" if first else ",") + json.dumps(release, separators=(",", ":")))
            first = False
        if parts:
            yield "".join(parts).encode()
        if len(rows) < page:
            break
        after = (rows[-1]["created_at"], rows[-1]["id"])
    yield tail.encode()


def ocds_extension_file(name: str) -> bytes:
    """A file of the project's OCDS extension (404 for any other name)."""
    content = ocds.extension_file(name)
    if content is None:
        raise not_found("OCDS extension file", name)
    return content
