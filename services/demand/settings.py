"""Settings of the demand service (environment prefix ``DEMAND_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DemandSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMAND_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "demand"

    # Disclosure control of the aggregated pipeline.
    pipeline_min_anchors: int = Field(
        3, ge=2, description="k: distinct anchors behind any aggregate-only figure"
    )
    pipeline_dominance_share: float = Field(
        0.8, gt=0, le=1, description="no anchor may hold more than this share of an aggregate-only value"
    )
    pipeline_p_percent: float | None = Field(
        None,
        gt=0,
        description="optional p% rule: the others (but the second largest) must hold at least p% of the "
        "largest anchor's value; off by default",
    )
    # Publication: public figures at every poll; the confidential part on its own cadence.
    pipeline_publisher: bool = Field(True, description="run the release job in this process")
    pipeline_poll_seconds: float = Field(
        1.0, gt=0, description="how often changed public figures are released"
    )
    pipeline_release_seconds: float = Field(
        3600.0,
        ge=0,
        description="how often the confidential (aggregate-only) part is released, under the change rule",
    )
    pipeline_view_cache_size: int = Field(256, ge=0)

    # Bulk imports.
    import_batch_size: int = Field(2000, ge=1)
    import_max_reported_errors: int = Field(10_000, ge=1)
    import_max_rows: int = Field(1_000_000, ge=1)

    # OCDS export.
    ocds_ocid_prefix: str = "ocds-seedbed"
    ocds_publisher_name: str = "Seedbed"
    ocds_package_base_uri: str = "https://seedbed.dev/api/v1/demand/ocds"

    # Stale lines: a draft or planned line whose expected tender date passed without an update.
    stale_lines_job: bool = Field(True, description="run the stale-lines job in this process")
    stale_lines_poll_seconds: float = Field(
        600.0, gt=0, description="how often the stale-lines job looks for lines whose tender date passed"
    )
    stale_lines_leave_pipeline: bool = Field(
        True,
        description="a stale line leaves the pipeline, matching and the OCDS export until an update gives "
        "it a date again (its anchor is told either way)",
    )
    stale_lines_batch_size: int = Field(500, ge=1)

    # Matching.
    match_default_limit: int = Field(20, ge=1)
    match_max_limit: int = Field(200, ge=1)
