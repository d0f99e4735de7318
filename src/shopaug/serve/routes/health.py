"""``GET /healthz``, ``GET /readyz``, ``GET /model`` and ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from shopaug.serve.deps import Backend, Metrics, RuntimeDep
from shopaug.serve.schemas import ModelInfo, Status, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
def healthz() -> Status:
    """The process is up (says nothing about the model)."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
def readyz(runtime: RuntimeDep) -> Any:
    """Ready when the model is loaded and the feedback store answers."""
    current = runtime.holder.backend
    if current is None:
        detail = runtime.holder.load_error or "the model is loading"
        return JSONResponse(
            status_code=503, content=Status(status="not ready", detail=detail).model_dump()
        )
    try:
        if runtime.store is None:
            raise RuntimeError("the feedback store is not open")
        runtime.store.ping()
    except Exception as error:
        return JSONResponse(
            status_code=503,
            content=Status(
                status="not ready",
                model_version=current.version,
                detail=f"feedback store unreachable: {type(error).__name__}",
            ).model_dump(),
        )
    return Status(status="ready", model_version=current.version)


@router.get("/model", response_model=ModelInfo, responses=error_responses(503))
def model_info(backend: Backend) -> ModelInfo:
    """The model in service: its version and how ``/search`` ranks with it (dense, or fused
    with BM25 as ``model/fusion.json`` says)."""
    return ModelInfo(model_version=backend.version, ranking=backend.ranking)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics(metrics: Metrics) -> Any:
    """Prometheus text format."""
    payload, content_type = metrics.render()
    return Response(content=payload, media_type=content_type)
