"""``POST /admin/reload`` and ``POST /admin/promote``: swap the model in service.

Both need ``Authorization: Bearer <admin token>`` (:func:`shopaug.serve.deps.require_admin`).
A model that cannot be loaded (a missing directory, a half-written one: the message names the
incomplete file, a loader error) is answered 422 with the reason; the model in service keeps
serving and no request fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException

from shopaug.serve.deps import Holder, require_admin
from shopaug.serve.schemas import ModelSwap, PromoteRequest, error_responses
from shopaug.serve.state import ModelHolder, ModelLoadError, Swap

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 404, 413),
)


def _swap(holder: ModelHolder, do_swap: Callable[[], Swap]) -> ModelSwap:
    try:
        swap = do_swap()
    except ModelLoadError as error:
        current = holder.backend
        serving = "no model is served" if current is None else f"still serving {current.version}"
        # The model in service first: long paths in the error may be cut in the answer.
        raise HTTPException(status_code=422, detail=f"{serving}; {error}") from error
    return ModelSwap(
        model_version=swap.model_version,
        previous_version=swap.previous_version,
        model_dir=str(swap.model_dir),
    )


@router.post("/reload", response_model=ModelSwap)
def admin_reload(holder: Holder) -> ModelSwap:
    """Load the model the pointer designates now (after an external promotion)."""
    return _swap(holder, holder.reload)


@router.post("/promote", response_model=ModelSwap)
def admin_promote(request: PromoteRequest, holder: Holder) -> ModelSwap:
    """Copy a model directory into the run, load it, move the pointer, swap."""
    return _swap(holder, lambda: holder.promote(Path(request.model_dir)))
