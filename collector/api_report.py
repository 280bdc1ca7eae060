"""``GET /report?month=YYYY-MM``: the monthly availability report (collector/report.py) served by
the collector's API for the status page to link to — HTML, or ``format=csv`` for the CSV. Any role
that may read monitoring data (viewer and up) may read it; registered by collector/api_app.py."""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations at runtime.

import sqlite3
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from collector import report as rep
from collector.config import CollectorConfig
from probes.configfile import ConfigError


@runtime_checkable
class HasConfig(Protocol):
    """The running collector (collector/service.py): the report reads its config's files."""

    cfg: CollectorConfig


def register_report_routes(app: FastAPI, reader: Any, collector: object) -> None:
    """Add ``/report`` to ``app``; ``reader`` is the API's dependency for the read permission."""

    @app.get(
        "/report",
        tags=["report"],
        response_class=Response,
        responses={200: {"content": {"text/html": {}, "text/csv": {}}, "description": "the report"}},
    )
    async def report(
        p: Annotated[Any, reader],
        month: Annotated[
            str | None, Query(pattern=r"^\d{4}-\d{2}$", description="the month, YYYY-MM; default: this month so far")
        ] = None,
        format: Annotated[Literal["html", "csv"], Query(description="html (printable) or csv (Excel)")] = "html",
    ) -> Response:
        """The monthly availability report / 月度网络运行情况通报 (months in the collector's time zone)."""
        if not isinstance(collector, HasConfig):
            raise HTTPException(404, "no report here: this API has no collector config to read")
        cfg = collector.cfg
        if month is None:
            month = rep.this_month(cfg.collector.timezone)
        try:
            r = await run_in_threadpool(rep.build, cfg, month)
        except rep.ReportError as e:
            raise HTTPException(400, str(e)) from None
        except ConfigError as e:
            raise HTTPException(503, f"the topology file cannot be read: {str(e)[:500]}") from None
        except sqlite3.Error as e:
            raise HTTPException(503, f"the collector's databases cannot be read: {str(e)[:300]}") from None
        if format == "csv":
            return Response(
                rep.to_csv(r),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": f'attachment; filename="netwatch-availability-{r.month}.csv"'},
            )
        return HTMLResponse(rep.to_html(r), headers={"content-security-policy": rep.CSP})
